-- Cheaper writes for the processor's sink: every index on a hot table is paid for on each
-- insert, and an index on a column that an upsert changes turns every update into a non-HOT
-- one (a new entry in *every* index of the table). Kept: what a reader needs (the dashboard's
-- queries, pruning, identity merges); time ranges that follow insertion order use BRIN, which
-- costs almost nothing to maintain and, since PostgreSQL 16, does not prevent HOT updates.

-- events: the dashboard reads raw events only by visitor (customer timeline, identity merge);
-- pruning deletes by received_at, which grows with insertion order.
DROP INDEX events_occurred_at_idx;
DROP INDEX events_user_idx;
DROP INDEX events_anonymous_idx;
DROP INDEX events_received_at_idx;
CREATE INDEX events_received_at_brin ON events USING brin (received_at);

-- sessions: counters and last_seen_at change on every batch; with no b-tree on a changing
-- column and room left on each page, those updates are HOT. Active sessions (last_seen_at) and
-- sessions started in a range (started_at) are found by BRIN: rows sit in start order.
DROP INDEX sessions_last_seen_idx;
DROP INDEX sessions_started_idx;
DROP INDEX sessions_visitor_idx;
CREATE INDEX sessions_started_brin ON sessions USING brin (started_at) WITH (pages_per_range = 16);
CREATE INDEX sessions_last_seen_brin ON sessions USING brin (last_seen_at)
    WITH (pages_per_range = 16);
CREATE INDEX sessions_visitor_idx ON sessions (visitor_key);
ALTER TABLE sessions SET (fillfactor = 70);

-- customers: nobody looks customers up by user id or lifetime value. The newest-first list
-- (last_seen_at) and the id prefix search stay.
DROP INDEX customers_user_idx;
DROP INDEX customers_ltv_idx;

-- funnel_steps: read by reached_at range (the dashboard's leftover minutes); rows arrive in
-- time order.
DROP INDEX funnel_steps_reached_idx;
CREATE INDEX funnel_steps_reached_brin ON funnel_steps USING brin (reached_at)
    WITH (pages_per_range = 16);

-- Rows updated in place batch after batch: leave room on each page for HOT updates.
ALTER TABLE session_state SET (fillfactor = 60);
ALTER TABLE metrics_minute SET (fillfactor = 50);
ALTER TABLE product_metrics_hour SET (fillfactor = 60);
