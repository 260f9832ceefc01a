-- Identifier columns compare bytewise (COLLATE "C"): visitor keys, anonymous and user ids,
-- session ids, event types, funnel steps and product ids. They are keys that nobody reads in
-- alphabetical order, and every batch compares them thousands of times: in the primary keys
-- and indexes it probes, and in the sorts and groupings that fold its deltas. Under a
-- linguistic collation each comparison goes through the locale's rules; Cloud SQL creates every
-- PostgreSQL database with en_US.UTF8. What it saves per event: benchmarks/README.md ("PostgreSQL
-- work per event"). Also, `max()` over these columns in the apply round now orders as the
-- processor's Python does when it folds a batch (by code point).
--
-- Display text (names, categories, URLs, sources, devices) keeps the database's collation. A
-- column that compares with one of these under the default collation takes "C" for that
-- comparison (an implicit collation wins over the default), so queries need no change.
-- Only the indexes on these columns are rebuilt, not the tables; on a large database, run it
-- at a quiet time (`clickstream db migrate`, before the new processor is deployed).

ALTER TABLE customers
    ALTER COLUMN visitor_key TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C",
    ALTER COLUMN anonymous_ids TYPE text[] COLLATE "C";
ALTER TABLE sessions
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN visitor_key TYPE text COLLATE "C",
    ALTER COLUMN anonymous_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE session_state
    ALTER COLUMN anonymous_id TYPE text COLLATE "C",
    ALTER COLUMN session_id TYPE text COLLATE "C";
ALTER TABLE identities
    ALTER COLUMN anonymous_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE funnel_steps
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN step TYPE text COLLATE "C";
ALTER TABLE visitor_activity
    ALTER COLUMN visitor_key TYPE text COLLATE "C",
    ALTER COLUMN event_types TYPE text[] COLLATE "C";
ALTER TABLE visitor_minutes
    ALTER COLUMN event_type TYPE text COLLATE "C",
    ALTER COLUMN visitor_key TYPE text COLLATE "C";
ALTER TABLE visitor_hours ALTER COLUMN visitor_key TYPE text COLLATE "C";
ALTER TABLE visitor_days ALTER COLUMN visitor_key TYPE text COLLATE "C";
ALTER TABLE metrics_minute ALTER COLUMN event_type TYPE text COLLATE "C";
ALTER TABLE metrics_hour ALTER COLUMN event_type TYPE text COLLATE "C";
ALTER TABLE funnel_hour ALTER COLUMN step TYPE text COLLATE "C";
ALTER TABLE product_metrics_hour ALTER COLUMN product_id TYPE text COLLATE "C";
ALTER TABLE product_metrics_day ALTER COLUMN product_id TYPE text COLLATE "C";

-- The deltas (303_aggregate_deltas.sql) keep their aggregates' column types.
ALTER TABLE delta_customers
    ALTER COLUMN visitor_key TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C",
    ALTER COLUMN anonymous_ids TYPE text[] COLLATE "C";
ALTER TABLE delta_sessions
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN visitor_key TYPE text COLLATE "C",
    ALTER COLUMN anonymous_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE delta_funnel_steps
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN step TYPE text COLLATE "C";
ALTER TABLE delta_visitor_minutes
    ALTER COLUMN event_type TYPE text COLLATE "C",
    ALTER COLUMN visitor_key TYPE text COLLATE "C";
ALTER TABLE delta_visitor_hours ALTER COLUMN visitor_key TYPE text COLLATE "C";
ALTER TABLE delta_visitor_days ALTER COLUMN visitor_key TYPE text COLLATE "C";
ALTER TABLE delta_minutes ALTER COLUMN event_type TYPE text COLLATE "C";
ALTER TABLE delta_products ALTER COLUMN product_id TYPE text COLLATE "C";
