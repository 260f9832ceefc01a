-- `clickstream replay bad-events` sends a bad event that today's contract accepts back to
-- `events` and stamps it here, so a second replay skips it and the dashboard can show what was
-- recovered against what is still bad. NULL: never replayed.
ALTER TABLE bad_events ADD COLUMN replayed_at timestamptz;
-- The replay reads only the rows not replayed yet, in id order.
CREATE INDEX bad_events_not_replayed_idx ON bad_events (id) WHERE replayed_at IS NULL;
