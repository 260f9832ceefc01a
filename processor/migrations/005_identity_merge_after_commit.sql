-- Identity merges run after the batch that records a link has committed, in a short transaction
-- of their own (processor.identities.merge_pending), instead of inside that batch with every
-- other batch held back from its attribution to its commit. A link is pending until merged.
ALTER TABLE identities ADD COLUMN merged_at timestamptz;
UPDATE identities SET merged_at = linked_at;  -- merged in their batch, as 002 did
CREATE INDEX identities_pending_idx ON identities (anonymous_id) WHERE merged_at IS NULL;
