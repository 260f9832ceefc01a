-- visitor_activity.events is written once per visitor and batch and read only for one
-- customer's timeline: stored as json (the text, checked once) instead of jsonb (parsed into
-- its binary form on every insert), and kept inline and uncompressed up to a whole page
-- instead of compressed from 2 kB on, so a batch's rows cost their copy and little more.
-- benchmarks/processor_pg_profile.py shows the difference (benchmarks/README.md).
ALTER TABLE visitor_activity ALTER COLUMN events TYPE json USING events::json;
ALTER TABLE visitor_activity SET (toast_tuple_target = 8160);
ALTER TABLE visitor_activity ALTER COLUMN events SET STORAGE MAIN;
