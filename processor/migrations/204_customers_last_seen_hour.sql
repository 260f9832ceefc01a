-- 203's UTC day was too coarse a bound for the customer list: a range of minutes or hours
-- still read every customer seen that day (benchmarks/results/processor-pg-per-event.md, the
-- customer list before and after). The UTC hour bounds it closely and still changes at most
-- once an hour per customer, so nearly every customers update stays HOT.
DROP INDEX customers_last_seen_day_idx;
ALTER TABLE customers DROP COLUMN last_seen_day;
ALTER TABLE customers
    ADD COLUMN last_seen_hour timestamp  -- UTC
    GENERATED ALWAYS AS (date_trunc('hour', last_seen_at AT TIME ZONE 'UTC')) STORED;
CREATE INDEX customers_last_seen_hour_idx ON customers (last_seen_hour);
