-- The dashboard's customer list sorts by lifetime value or orders (descending, ties by visitor
-- key) and pages by keyset; without an index in that order every page sorts every customer
-- the range holds (benchmarks/README.md, "Customer list"). 003 dropped the lifetime-value
-- index when nothing read it. The cost is one index entry more each per customer update, which
-- is not a HOT update anyway (last_seen_at is indexed).
CREATE INDEX customers_lifetime_value_idx ON customers (lifetime_value DESC, visitor_key DESC);
CREATE INDEX customers_orders_idx ON customers (orders DESC, visitor_key DESC);
