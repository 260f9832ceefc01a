-- The sink's per-event work shrinks to one narrow dedup key (issue 15): raw events no longer
-- land in PostgreSQL (BigQuery keeps the history). What PostgreSQL kept them for moves here:
--
-- event_ids: the exactly-once key. A batch inserts its event ids first and aggregates only the
-- ones that were new. `session_id` is the session the processor assigned (NULL when the client
-- sent its own), so a redelivered event gets the id it was first stored with. Pruned by
-- `received_at` (processor.db.prune), like the raw events were: the retention must exceed the
-- subscription's message retention.
--
-- visitor_activity: one row per visitor and batch, written instead of one row per event. It
-- holds the visitor's newest events of that batch as the dashboard's customer timeline shows
-- them (`events`, a JSON array, at most 50), and where the visitor was active
-- (`minutes` x `event_types`, every distinct pair): an identity merge re-keys the unique-visitor
-- rows of exactly those buckets. Pruned by `received_at` too.

CREATE TABLE event_ids (
    event_id     uuid PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    session_id   uuid
);
CREATE INDEX event_ids_received_at_brin ON event_ids USING brin (received_at)
    WITH (autosummarize = on);

CREATE TABLE visitor_activity (
    visitor_key  text        NOT NULL,
    received_at  timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    minutes      timestamptz[] NOT NULL,
    event_types  text[]      NOT NULL,
    events       jsonb       NOT NULL
);
CREATE INDEX visitor_activity_visitor_idx ON visitor_activity (visitor_key, last_at DESC);
CREATE INDEX visitor_activity_received_at_brin ON visitor_activity USING brin (received_at)
    WITH (autosummarize = on);

INSERT INTO event_ids (event_id, received_at, session_id)
SELECT event_id, received_at,
       CASE WHEN session_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            THEN session_id::uuid END
FROM events;

WITH buckets AS (
    SELECT visitor_key, array_agg(minute ORDER BY minute, event_type) AS minutes,
           array_agg(event_type ORDER BY minute, event_type) AS event_types
    FROM (SELECT DISTINCT visitor_key, date_trunc('minute', occurred_at, 'UTC') AS minute,
                          event_type
          FROM events) d
    GROUP BY visitor_key
), newest AS (
    SELECT *, row_number() OVER (PARTITION BY visitor_key
                                 ORDER BY occurred_at DESC, event_id) AS n
    FROM events
)
INSERT INTO visitor_activity (visitor_key, received_at, last_at, minutes, event_types, events)
SELECT e.visitor_key, max(e.received_at), max(e.occurred_at), b.minutes, b.event_types,
       jsonb_agg(jsonb_build_object(
           'event_id', e.event_id, 'event_type', e.event_type, 'occurred_at', e.occurred_at,
           'session_id', e.session_id, 'anonymous_id', e.anonymous_id, 'page_path', e.page_path,
           'page_title', e.page_title, 'product_id', e.product_id,
           'product_name', e.product_name, 'price', e.price, 'quantity', e.quantity,
           'order_id', e.order_id, 'revenue', e.revenue)
           ORDER BY e.occurred_at DESC, e.event_id) FILTER (WHERE e.n <= 50)
FROM newest e JOIN buckets b USING (visitor_key)
GROUP BY e.visitor_key, b.minutes, b.event_types;

DROP TABLE events;
