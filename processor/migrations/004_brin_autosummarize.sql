-- BRIN indexes summarize a block range when VACUUM reaches it; until then every bitmap scan
-- reads the whole unsummarized tail of the table. The tail is where the newest rows live (what
-- the dashboard's live queries read), so ask for each range to be summarized as soon as it is
-- full instead.
ALTER INDEX events_received_at_brin SET (autosummarize = on);
ALTER INDEX sessions_started_brin SET (autosummarize = on);
ALTER INDEX sessions_last_seen_brin SET (autosummarize = on);
ALTER INDEX funnel_steps_reached_brin SET (autosummarize = on);
