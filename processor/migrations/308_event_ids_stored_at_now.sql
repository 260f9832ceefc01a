-- A dedup key's `received_at` is the time its batch stored it (the transaction's start), no
-- longer the gateway's receipt sent by the processor: encoding one timestamptz per event cost
-- the processor about as much as the rest of the key's COPY row (~1.1 us per event here). They
-- differ by seconds; after a backlog, by its length, and a key is then kept longer than the
-- retention asks, never shorter. Pruning (`clickstream db prune`) still reads this column.
ALTER TABLE event_ids ALTER COLUMN received_at SET DEFAULT now();
