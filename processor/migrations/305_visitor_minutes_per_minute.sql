-- Unique visitors per minute, whatever they did: one row per visitor and minute instead of one
-- per visitor, minute and event type. On the shoppers workload that is 0.44 rows per event
-- instead of 0.73, and the unique-visitor rows were the costliest statement of an apply round
-- (benchmarks/README.md, "PostgreSQL work per event"). Nothing read the per-type count
-- (metrics_minute.unique_visitors), which that key existed for: the dashboard counts distinct
-- visitors over a range from visitor_days / visitor_hours / visitor_minutes, by visitor only.
-- Distinct visitors per minute and event type remain a query over BigQuery's events.
--
-- The activity rows' `minutes` (where an identity merge finds the rows to re-key) lose their
-- twin `event_types`; their older rows may list a minute twice, which the merge takes once.

ALTER TABLE visitor_minutes RENAME TO visitor_minutes_per_type;
ALTER INDEX visitor_minutes_pkey RENAME TO visitor_minutes_per_type_pkey;
CREATE TABLE visitor_minutes (
    minute      timestamptz NOT NULL,
    visitor_key text COLLATE "C" NOT NULL,
    PRIMARY KEY (minute, visitor_key)
);
INSERT INTO visitor_minutes (minute, visitor_key)
SELECT DISTINCT minute, visitor_key FROM visitor_minutes_per_type;
DROP TABLE visitor_minutes_per_type;

ALTER TABLE delta_visitor_minutes DROP COLUMN event_type;  -- applied with DISTINCT
ALTER TABLE metrics_minute DROP COLUMN unique_visitors;
ALTER TABLE visitor_activity DROP COLUMN event_types;
