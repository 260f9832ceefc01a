-- Dashboard rollups: coarser copies of the processor's aggregates, so a 30-day view reads a few
-- thousand rows instead of every minute. Each is kept in step by a trigger on its source table
-- (the processor's upserts touch a handful of rows per batch, so the cost there is small), and is
-- backfilled here from whatever the source already holds. All buckets are in UTC.

-- metrics_minute summed per hour (unique visitors do not add up: the dashboard counts them from
-- visitor_days / visitor_hours / visitor_minutes).
CREATE TABLE metrics_hour (
    hour        timestamptz NOT NULL,
    event_type  text        NOT NULL,
    events      bigint      NOT NULL DEFAULT 0,
    revenue     numeric(16, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, event_type)
);

CREATE FUNCTION dashboard_metrics_hour_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO metrics_hour AS h (hour, event_type, events, revenue)
        VALUES (date_trunc('hour', OLD.minute, 'UTC'), OLD.event_type, -OLD.events, -OLD.revenue)
        ON CONFLICT (hour, event_type) DO UPDATE
            SET events = h.events + excluded.events, revenue = h.revenue + excluded.revenue;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO metrics_hour AS h (hour, event_type, events, revenue)
        VALUES (date_trunc('hour', NEW.minute, 'UTC'), NEW.event_type, NEW.events, NEW.revenue)
        ON CONFLICT (hour, event_type) DO UPDATE
            SET events = h.events + excluded.events, revenue = h.revenue + excluded.revenue;
    END IF;
    RETURN NULL;
END
$$;

INSERT INTO metrics_hour (hour, event_type, events, revenue)
SELECT date_trunc('hour', minute, 'UTC'), event_type, sum(events), sum(revenue)
FROM metrics_minute GROUP BY 1, 2;

CREATE TRIGGER metrics_minute_to_hour AFTER INSERT OR UPDATE OR DELETE ON metrics_minute
    FOR EACH ROW EXECUTE FUNCTION dashboard_metrics_hour_apply();

-- funnel_steps counted per hour and step: sessions that first reached the step in that hour.
CREATE TABLE funnel_hour (
    hour      timestamptz NOT NULL,
    step      text        NOT NULL,
    sessions  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, step)
);

CREATE FUNCTION dashboard_funnel_hour_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO funnel_hour AS f (hour, step, sessions)
        VALUES (date_trunc('hour', OLD.reached_at, 'UTC'), OLD.step, -1)
        ON CONFLICT (hour, step) DO UPDATE SET sessions = f.sessions + excluded.sessions;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO funnel_hour AS f (hour, step, sessions)
        VALUES (date_trunc('hour', NEW.reached_at, 'UTC'), NEW.step, 1)
        ON CONFLICT (hour, step) DO UPDATE SET sessions = f.sessions + excluded.sessions;
    END IF;
    RETURN NULL;
END
$$;

INSERT INTO funnel_hour (hour, step, sessions)
SELECT date_trunc('hour', reached_at, 'UTC'), step, count(*) FROM funnel_steps GROUP BY 1, 2;

CREATE TRIGGER funnel_steps_to_hour AFTER INSERT OR UPDATE OR DELETE ON funnel_steps
    FOR EACH ROW EXECUTE FUNCTION dashboard_funnel_hour_apply();

-- product_metrics_hour summed per day.
CREATE TABLE product_metrics_day (
    day          timestamptz NOT NULL,
    product_id   text        NOT NULL,
    product_name text,
    category     text,
    views        bigint      NOT NULL DEFAULT 0,
    carts        bigint      NOT NULL DEFAULT 0,
    removals     bigint      NOT NULL DEFAULT 0,
    units        bigint      NOT NULL DEFAULT 0,
    revenue      numeric(16, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (day, product_id)
);

CREATE FUNCTION dashboard_product_day_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO product_metrics_day AS d
            (day, product_id, views, carts, removals, units, revenue)
        VALUES (date_trunc('day', OLD.hour, 'UTC'), OLD.product_id,
                -OLD.views, -OLD.carts, -OLD.removals, -OLD.units, -OLD.revenue)
        ON CONFLICT (day, product_id) DO UPDATE SET
            views = d.views + excluded.views, carts = d.carts + excluded.carts,
            removals = d.removals + excluded.removals, units = d.units + excluded.units,
            revenue = d.revenue + excluded.revenue;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO product_metrics_day AS d
            (day, product_id, product_name, category, views, carts, removals, units, revenue)
        VALUES (date_trunc('day', NEW.hour, 'UTC'), NEW.product_id, NEW.product_name,
                NEW.category, NEW.views, NEW.carts, NEW.removals, NEW.units, NEW.revenue)
        ON CONFLICT (day, product_id) DO UPDATE SET
            product_name = coalesce(excluded.product_name, d.product_name),
            category = coalesce(excluded.category, d.category),
            views = d.views + excluded.views, carts = d.carts + excluded.carts,
            removals = d.removals + excluded.removals, units = d.units + excluded.units,
            revenue = d.revenue + excluded.revenue;
    END IF;
    RETURN NULL;
END
$$;

INSERT INTO product_metrics_day
    (day, product_id, product_name, category, views, carts, removals, units, revenue)
SELECT date_trunc('day', hour, 'UTC'), product_id, max(product_name), max(category),
       sum(views), sum(carts), sum(removals), sum(units), sum(revenue)
FROM product_metrics_hour GROUP BY 1, 2;

CREATE TRIGGER product_metrics_hour_to_day AFTER INSERT OR UPDATE OR DELETE ON product_metrics_hour
    FOR EACH ROW EXECUTE FUNCTION dashboard_product_day_apply();

