-- The applier folds a customer's deltas without a join (processor/postgres.py,
-- APPLY_CUSTOMERS_SQL): the anonymous ids of several deltas are concatenated by this aggregate,
-- then sorted and deduplicated once. array_cat is built in; its cost is a copy per delta.
CREATE AGGREGATE array_cat_agg(anycompatiblearray) (sfunc = array_cat, stype = anycompatiblearray);
