-- The dashboard's customer search (a visitor key prefix) reads the primary key: since
-- migration 304 the key compares bytewise (COLLATE "C"), the order the text_pattern_ops index
-- was there for, so that index only cost every profile inserted, and every update that could not
-- stay HOT, one more index entry: 4-7% of the apply round's customers statement
-- (benchmarks/README.md, "PostgreSQL work per event").
DROP INDEX customers_visitor_pattern_idx;
