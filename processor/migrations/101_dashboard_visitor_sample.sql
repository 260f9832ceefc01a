-- Distinct visitors over ranges longer than 12 hours are estimated from a fixed 1/16 sample of
-- visitor keys (by hash), so a 30-day count reads ~1/16 of visitor_days instead of hashing
-- every visitor of every day. These partial indexes hold exactly that sample, index-only.
-- The predicate must stay textually equal to the dashboard's (dashboard/queries.py: SAMPLE).
CREATE INDEX visitor_days_sample_idx ON visitor_days (day, visitor_key)
    WHERE (hashtext(visitor_key) & 15) = 0;
CREATE INDEX visitor_hours_sample_idx ON visitor_hours (hour, visitor_key)
    WHERE (hashtext(visitor_key) & 15) = 0;
