-- The dashboard's rollups (100_dashboard_rollups.sql), kept in step per statement instead of per
-- row: one set-based upsert per source statement from its transition tables, rather than one
-- PL/pgSQL call and one upsert per changed row (the sink changes thousands of funnel rows and
-- hundreds of product rows per batch). Same tables, same meaning, any writer: an upsert's
-- inserted rows add, its updated rows add (new - old), deleted rows subtract. Numbered after
-- 100 so it runs after the rollups exist. All buckets are in UTC.

DROP TRIGGER metrics_minute_to_hour ON metrics_minute;
DROP TRIGGER funnel_steps_to_hour ON funnel_steps;
DROP TRIGGER product_metrics_hour_to_day ON product_metrics_hour;
DROP FUNCTION dashboard_metrics_hour_apply();
DROP FUNCTION dashboard_funnel_hour_apply();
DROP FUNCTION dashboard_product_day_apply();

-- `changes` (below) is the statement's rows with a sign: `plus` columns from new_rows (INSERT,
-- UPDATE), `minus` columns from old_rows (UPDATE, DELETE). Dynamic SQL, because a transition
-- table that a trigger does not declare cannot even be named in its function's static SQL.
CREATE FUNCTION rollup_changes(op text, plus text, minus text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(' UNION ALL ',
                     CASE WHEN op <> 'DELETE' THEN 'SELECT ' || plus || ' FROM new_rows' END,
                     CASE WHEN op <> 'INSERT' THEN 'SELECT ' || minus || ' FROM old_rows' END)
$$;

CREATE FUNCTION rollup_metrics_hour() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($sql$
        WITH changes (minute, event_type, events, revenue) AS (%s)
        INSERT INTO metrics_hour AS h (hour, event_type, events, revenue)
        SELECT date_trunc('hour', minute, 'UTC'), event_type, sum(events), sum(revenue)
        FROM changes GROUP BY 1, 2
        HAVING sum(events) <> 0 OR sum(revenue) <> 0
        ORDER BY 1, 2
        ON CONFLICT (hour, event_type) DO UPDATE
            SET events = h.events + excluded.events, revenue = h.revenue + excluded.revenue
    $sql$, rollup_changes(TG_OP, 'minute, event_type, events, revenue',
                          'minute, event_type, -events, -revenue'));
    RETURN NULL;
END
$$;

CREATE FUNCTION rollup_funnel_hour() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($sql$
        WITH changes (reached_at, step, n) AS (%s)
        INSERT INTO funnel_hour AS f (hour, step, sessions)
        SELECT date_trunc('hour', reached_at, 'UTC'), step, sum(n)
        FROM changes GROUP BY 1, 2
        HAVING sum(n) <> 0
        ORDER BY 1, 2
        ON CONFLICT (hour, step) DO UPDATE SET sessions = f.sessions + excluded.sessions
    $sql$, rollup_changes(TG_OP, 'reached_at, step, 1', 'reached_at, step, -1'));
    RETURN NULL;
END
$$;

CREATE FUNCTION rollup_product_day() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($sql$
        WITH changes (hour, product_id, product_name, category, views, carts, removals, units,
                      revenue) AS (%s)
        INSERT INTO product_metrics_day AS d
            (day, product_id, product_name, category, views, carts, removals, units, revenue)
        SELECT date_trunc('day', hour, 'UTC'), product_id, max(product_name), max(category),
               sum(views), sum(carts), sum(removals), sum(units), sum(revenue)
        FROM changes GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (day, product_id) DO UPDATE SET
            product_name = coalesce(excluded.product_name, d.product_name),
            category = coalesce(excluded.category, d.category),
            views = d.views + excluded.views, carts = d.carts + excluded.carts,
            removals = d.removals + excluded.removals, units = d.units + excluded.units,
            revenue = d.revenue + excluded.revenue
    $sql$, rollup_changes(
        TG_OP,
        'hour, product_id, product_name, category, views, carts, removals, units, revenue',
        'hour, product_id, NULL, NULL, -views, -carts, -removals, -units, -revenue'));
    RETURN NULL;
END
$$;

-- A trigger with transition tables handles one event, hence three per table.
CREATE TRIGGER metrics_minute_to_hour_ins AFTER INSERT ON metrics_minute
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_metrics_hour();
CREATE TRIGGER metrics_minute_to_hour_upd AFTER UPDATE ON metrics_minute
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_metrics_hour();
CREATE TRIGGER metrics_minute_to_hour_del AFTER DELETE ON metrics_minute
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_metrics_hour();

CREATE TRIGGER funnel_steps_to_hour_ins AFTER INSERT ON funnel_steps
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_funnel_hour();
CREATE TRIGGER funnel_steps_to_hour_upd AFTER UPDATE ON funnel_steps
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_funnel_hour();
CREATE TRIGGER funnel_steps_to_hour_del AFTER DELETE ON funnel_steps
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_funnel_hour();

CREATE TRIGGER product_metrics_hour_to_day_ins AFTER INSERT ON product_metrics_hour
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_product_day();
CREATE TRIGGER product_metrics_hour_to_day_upd AFTER UPDATE ON product_metrics_hour
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_product_day();
CREATE TRIGGER product_metrics_hour_to_day_del AFTER DELETE ON product_metrics_hour
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_product_day();
