-- customers: most upserts change only counters and `last_seen_at`, yet every one wrote an entry
-- in each of the table's indexes, because `last_seen_at` was indexed (an update that changes an
-- indexed column cannot be HOT). The customers upsert was the sink's costliest statement
-- (benchmarks/results/processor-pg-per-event.md). The customer list's range filter now finds
-- its candidates by the UTC day of `last_seen_at`, a stored column that changes at most once a
-- day per customer, and checks `last_seen_at` itself on those rows: an update within the day
-- leaves every indexed value as it was and stays on its page (HOT), when the page has room.
-- The lifetime-value and orders indexes (102) change only with a purchase.
ALTER TABLE customers SET (fillfactor = 70);
ALTER TABLE customers
    ADD COLUMN last_seen_day date
    GENERATED ALWAYS AS ((last_seen_at AT TIME ZONE 'UTC')::date) STORED;
DROP INDEX customers_last_seen_idx;
CREATE INDEX customers_last_seen_day_idx ON customers (last_seen_day);
