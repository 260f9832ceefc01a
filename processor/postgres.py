"""The PostgreSQL sink: one transaction per batch, exactly once in effect.

Per batch, on one pooled connection and in one transaction:

1. lock and read the session state of the batch's visitors, assign sessions (`processor.sessions`);
2. COPY the batch (binary) into the temp table `incoming`;
3. `INSERT INTO events` from the temp view `fresh` (the rows of `incoming` typed as in
   `events`): a plain insert, or, when the batch holds an event stored before, `ON CONFLICT
   (event_id) DO NOTHING`, after which the rows it skipped are deleted from `incoming`; so
   `fresh` is exactly the rows that are new;
4. one multi-statement script updates every aggregate from `fresh` only, with set-based
   `INSERT ... ON CONFLICT DO UPDATE` (no per-row round trips); new sessions go through the temp
   table `new_sessions` so traffic, devices and customers count each session once;
5. save the session state, insert bad events (deduplicated by `message_key`), commit.

Identity links (`identify` events, see `processor.identities`) attribute anonymous events before
step 3 (after a lock on `identities` that every batch takes after its session-state rows), and
a batch records the links it creates after step 4. Once it has committed, the pending links are
merged in a short transaction of their own.

A redelivered message, or the same event in two messages, inserts nothing in step 3 and so
changes no aggregate. Every upsert visits its keys in sorted order, so concurrent batches wait
for each other instead of deadlocking; rows that every batch touches (this minute's and this
hour's counters, and the dashboard rollups their triggers keep) come last, so concurrent batches
wait on each other only at the end. Hours and days are UTC. Revenue sums `order.revenue`
as sent, whatever the currency.
"""

from __future__ import annotations

from typing import Final

import asyncpg
import msgspec

from clickstream_contract.config import connect_options
from processor import identities, sessions
from processor.db import Connection
from processor.records import BadEvent, EnrichedEvent

EVENT_COLUMNS: Final = tuple(EnrichedEvent.__struct_fields__)

# `incoming` mirrors EnrichedEvent field by field with the cheapest wire types (float8, text);
# the INSERT casts them to the `events` column types.
INCOMING_TYPES: Final = {
    "event_id": "uuid",
    "occurred_at": "timestamptz",
    "received_at": "timestamptz",
    "is_bot": "boolean",
    "price": "float8",
    "quantity": "integer",
    "revenue": "float8",
}
_CASTS: Final = {
    "price": "price::numeric(14, 2)",
    "revenue": "revenue::numeric(14, 2)",
    "order_items": "order_items::jsonb",
    "properties": "properties::jsonb",
}

SETUP_SQL: Final = f"""
CREATE TEMP TABLE IF NOT EXISTS incoming (
    {", ".join(f"{name} {INCOMING_TYPES.get(name, 'text')}" for name in EVENT_COLUMNS)}
) ON COMMIT DELETE ROWS;
CREATE OR REPLACE TEMP VIEW fresh AS SELECT
    {", ".join(f"{_CASTS[name]} AS {name}" if name in _CASTS else name for name in EVENT_COLUMNS)}
FROM incoming;
CREATE TEMP TABLE IF NOT EXISTS new_sessions (
    session_id text, visitor_key text, started_at timestamptz, referrer_class text,
    utm_source text, utm_medium text, device_type text, browser text, os text
) ON COMMIT DELETE ROWS;
"""

INSERT_EVENTS_SQL: Final = f"""
INSERT INTO events ({", ".join(EVENT_COLUMNS)})
SELECT * FROM fresh ORDER BY event_id
ON CONFLICT (event_id) DO NOTHING
"""

# Nearly every batch is all new: a plain INSERT skips ON CONFLICT's speculative insertion (a
# third of the insert's cost). In a savepoint, so that a duplicate only sends the batch down the
# ON CONFLICT path (after ROLLBACK_NEW_SQL, which leaves no subtransaction behind).
INSERT_NEW_EVENTS_SQL: Final = f"""
SAVEPOINT all_new;
INSERT INTO events ({", ".join(EVENT_COLUMNS)})
SELECT * FROM fresh ORDER BY event_id;
RELEASE SAVEPOINT all_new;
"""
ROLLBACK_NEW_SQL: Final = "ROLLBACK TO SAVEPOINT all_new; RELEASE SAVEPOINT all_new"

# The rows the insert skipped (stored before, by an earlier delivery or a concurrent batch)
# leave `incoming`, with the session id they were stored with. Rows this transaction inserted
# carry its transaction id (the sink's transaction is a top-level one, never a savepoint).
DROP_SEEN_SQL: Final = """
DELETE FROM incoming i USING events e
WHERE e.event_id = i.event_id AND e.xmin <> pg_current_xact_id()::xid
RETURNING i.event_id, e.session_id
"""

FUNNEL_STEPS: Final = ("product_view", "add_to_cart", "begin_checkout", "purchase")

# Text keys are sorted and grouped COLLATE "C" (byte order): much cheaper than a linguistic
# collation (abbreviated keys, no strcoll), and it is also the order in which every writer
# locks rows (Python's `sorted` on str agrees), so concurrent batches never deadlock.
AGGREGATES_SQL: Final = f"""
INSERT INTO visitor_hours (hour, visitor_key)
SELECT DISTINCT date_trunc('hour', occurred_at, 'UTC'), visitor_key COLLATE "C" FROM fresh
ORDER BY 1, 2
ON CONFLICT DO NOTHING;

INSERT INTO visitor_days (day, visitor_key)
SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date, visitor_key COLLATE "C" FROM fresh
ORDER BY 1, 2
ON CONFLICT DO NOTHING;

WITH per AS (
    SELECT session_id COLLATE "C" AS session_id,
           count(*) AS events,
           count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
           min(occurred_at) AS started_at,
           max(occurred_at) AS last_seen_at,
           bool_or(event_type = 'purchase') AS purchased,
           coalesce(sum(revenue) FILTER (WHERE event_type = 'purchase'), 0) AS revenue
    FROM fresh GROUP BY 1
), firsts AS (
    SELECT DISTINCT ON (session_id COLLATE "C") session_id COLLATE "C" AS session_id,
           visitor_key, anonymous_id, user_id, page_url, referrer_class, utm_source,
           utm_medium, utm_campaign, device_type, browser, os
    FROM fresh ORDER BY session_id COLLATE "C", occurred_at, event_id
), upserted AS (
    INSERT INTO sessions (session_id, visitor_key, anonymous_id, user_id, started_at,
                          last_seen_at, events, page_views, landing_url, referrer_class,
                          utm_source, utm_medium, utm_campaign, device_type, browser, os,
                          purchased, revenue)
    SELECT p.session_id, f.visitor_key, f.anonymous_id, f.user_id, p.started_at,
           p.last_seen_at, p.events, p.page_views, f.page_url, f.referrer_class,
           f.utm_source, f.utm_medium, f.utm_campaign, f.device_type, f.browser, f.os,
           p.purchased, p.revenue
    FROM per p JOIN firsts f USING (session_id)
    ORDER BY p.session_id
    ON CONFLICT (session_id) DO UPDATE SET
        started_at = least(sessions.started_at, excluded.started_at),
        last_seen_at = greatest(sessions.last_seen_at, excluded.last_seen_at),
        events = sessions.events + excluded.events,
        page_views = sessions.page_views + excluded.page_views,
        user_id = coalesce(sessions.user_id, excluded.user_id),
        purchased = sessions.purchased OR excluded.purchased,
        revenue = sessions.revenue + excluded.revenue
    RETURNING session_id, visitor_key, started_at, referrer_class, utm_source, utm_medium,
              device_type, browser, os, xmax = 0 AS inserted
)
INSERT INTO new_sessions
SELECT session_id, visitor_key, started_at, referrer_class, utm_source, utm_medium,
       device_type, browser, os
FROM upserted WHERE inserted;

WITH per AS (
    SELECT visitor_key COLLATE "C" AS visitor_key,
           max(user_id) AS user_id,
           coalesce(array_agg(DISTINCT anonymous_id) FILTER (WHERE anonymous_id IS NOT NULL),
                    '{{}}') AS anonymous_ids,
           min(occurred_at) AS first_seen_at,
           max(occurred_at) AS last_seen_at,
           count(*) AS events,
           count(*) FILTER (WHERE event_type = 'purchase') AS orders,
           coalesce(sum(revenue) FILTER (WHERE event_type = 'purchase'), 0) AS lifetime_value
    FROM fresh GROUP BY 1
), first_event AS (
    SELECT DISTINCT ON (visitor_key COLLATE "C") visitor_key COLLATE "C" AS visitor_key,
           coalesce(utm_source, referrer_class) AS source
    FROM fresh ORDER BY visitor_key COLLATE "C", occurred_at, event_id
), last_event AS (
    SELECT DISTINCT ON (visitor_key COLLATE "C") visitor_key COLLATE "C" AS visitor_key,
           device_type
    FROM fresh ORDER BY visitor_key COLLATE "C", occurred_at DESC, event_id
), last_order AS (
    SELECT DISTINCT ON (visitor_key COLLATE "C") visitor_key COLLATE "C" AS visitor_key,
           order_id, occurred_at
    FROM fresh WHERE event_type = 'purchase'
    ORDER BY visitor_key COLLATE "C", occurred_at DESC, event_id
), new_session_counts AS (
    SELECT visitor_key COLLATE "C" AS visitor_key, count(*) AS sessions
    FROM new_sessions GROUP BY 1
)
INSERT INTO customers (visitor_key, user_id, anonymous_ids, first_seen_at, last_seen_at, events,
                       sessions, orders, lifetime_value, last_order_id, last_order_at,
                       first_source, device_type)
SELECT p.visitor_key, p.user_id, p.anonymous_ids, p.first_seen_at, p.last_seen_at, p.events,
       coalesce(s.sessions, 0), p.orders, p.lifetime_value, o.order_id, o.occurred_at,
       fe.source, le.device_type
FROM per p
JOIN first_event fe USING (visitor_key)
JOIN last_event le USING (visitor_key)
LEFT JOIN last_order o USING (visitor_key)
LEFT JOIN new_session_counts s USING (visitor_key)
ORDER BY p.visitor_key
ON CONFLICT (visitor_key) DO UPDATE SET
    user_id = coalesce(customers.user_id, excluded.user_id),
    anonymous_ids = CASE WHEN excluded.anonymous_ids <@ customers.anonymous_ids
                         THEN customers.anonymous_ids
                         ELSE ARRAY(SELECT DISTINCT unnest(customers.anonymous_ids
                                                           || excluded.anonymous_ids)
                                    ORDER BY 1) END,
    first_seen_at = least(customers.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest(customers.last_seen_at, excluded.last_seen_at),
    events = customers.events + excluded.events,
    sessions = customers.sessions + excluded.sessions,
    orders = customers.orders + excluded.orders,
    lifetime_value = customers.lifetime_value + excluded.lifetime_value,
    last_order_id = CASE WHEN excluded.last_order_at > customers.last_order_at
                              OR customers.last_order_at IS NULL
                         THEN coalesce(excluded.last_order_id, customers.last_order_id)
                         ELSE customers.last_order_id END,
    last_order_at = greatest(customers.last_order_at, excluded.last_order_at),
    first_source = CASE WHEN excluded.first_seen_at < customers.first_seen_at
                        THEN excluded.first_source ELSE customers.first_source END,
    device_type = CASE WHEN excluded.last_seen_at >= customers.last_seen_at
                       THEN excluded.device_type ELSE customers.device_type END;

-- From here on, rows that every batch touches (this hour's, this minute's): last, so
-- their locks are held for the shortest time.
INSERT INTO funnel_steps (session_id, step, reached_at)
SELECT session_id COLLATE "C", event_type COLLATE "C", min(occurred_at) FROM fresh
WHERE event_type IN ({", ".join(f"'{step}'" for step in FUNNEL_STEPS)})
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (session_id, step) DO UPDATE SET reached_at = excluded.reached_at
WHERE excluded.reached_at < funnel_steps.reached_at;

WITH lines AS (
    SELECT date_trunc('hour', occurred_at, 'UTC') AS hour, product_id, product_name, category,
           (event_type = 'product_view')::int AS views,
           (event_type = 'add_to_cart')::int AS carts,
           (event_type = 'remove_from_cart')::int AS removals,
           CASE WHEN event_type = 'purchase' THEN coalesce(quantity, 1) ELSE 0 END AS units,
           CASE WHEN event_type = 'purchase'
                THEN coalesce(price, 0) * coalesce(quantity, 1) ELSE 0 END AS revenue
    FROM fresh
    WHERE product_id IS NOT NULL
      AND (event_type IN ('product_view', 'add_to_cart', 'remove_from_cart')
           OR (event_type = 'purchase' AND order_items IS NULL))
    UNION ALL
    SELECT date_trunc('hour', f.occurred_at, 'UTC'), item->>'product_id', item->>'name',
           item->>'category', 0, 0, 0, coalesce((item->>'quantity')::int, 1),
           coalesce((item->>'price')::numeric, 0) * coalesce((item->>'quantity')::int, 1)
    FROM fresh f CROSS JOIN LATERAL jsonb_array_elements(f.order_items) AS item
    WHERE f.event_type = 'purchase' AND f.order_items IS NOT NULL
)
INSERT INTO product_metrics_hour (hour, product_id, product_name, category, views, carts,
                                  removals, units, revenue)
SELECT hour, product_id COLLATE "C", max(product_name), max(category), sum(views), sum(carts),
       sum(removals), sum(units), sum(revenue)
FROM lines GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (hour, product_id) DO UPDATE SET
    product_name = coalesce(excluded.product_name, product_metrics_hour.product_name),
    category = coalesce(excluded.category, product_metrics_hour.category),
    views = product_metrics_hour.views + excluded.views,
    carts = product_metrics_hour.carts + excluded.carts,
    removals = product_metrics_hour.removals + excluded.removals,
    units = product_metrics_hour.units + excluded.units,
    revenue = product_metrics_hour.revenue + excluded.revenue;

INSERT INTO traffic_hour (hour, referrer_class, utm_source, utm_medium, sessions)
SELECT date_trunc('hour', started_at, 'UTC'), referrer_class, coalesce(utm_source, ''),
       coalesce(utm_medium, ''), count(*)
FROM new_sessions GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (hour, referrer_class, utm_source, utm_medium)
DO UPDATE SET sessions = traffic_hour.sessions + excluded.sessions;

INSERT INTO devices_hour (hour, device_type, browser, os, sessions)
SELECT date_trunc('hour', started_at, 'UTC'), device_type, coalesce(browser, ''),
       coalesce(os, ''), count(*)
FROM new_sessions GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (hour, device_type, browser, os)
DO UPDATE SET sessions = devices_hour.sessions + excluded.sessions;

-- Last of all, the hottest rows (this minute's).
WITH visitors AS (
    INSERT INTO visitor_minutes (minute, event_type, visitor_key)
    SELECT DISTINCT date_trunc('minute', occurred_at, 'UTC'), event_type COLLATE "C",
           visitor_key COLLATE "C"
    FROM fresh ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING minute, event_type
), new_visitors AS (
    SELECT minute, event_type, count(*) AS visitors FROM visitors GROUP BY 1, 2
), counts AS (
    SELECT date_trunc('minute', occurred_at, 'UTC') AS minute, event_type, count(*) AS events,
           coalesce(sum(revenue) FILTER (WHERE event_type = 'purchase'), 0) AS revenue
    FROM fresh GROUP BY 1, 2
)
INSERT INTO metrics_minute (minute, event_type, events, revenue, unique_visitors)
SELECT c.minute, c.event_type, c.events, c.revenue, coalesce(v.visitors, 0)
FROM counts c LEFT JOIN new_visitors v USING (minute, event_type)
ORDER BY 1, 2
ON CONFLICT (minute, event_type) DO UPDATE SET
    events = metrics_minute.events + excluded.events,
    revenue = metrics_minute.revenue + excluded.revenue,
    unique_visitors = metrics_minute.unique_visitors + excluded.unique_visitors;
"""

INSERT_BAD_SQL: Final = """
INSERT INTO bad_events (received_at, source, reason, reason_class, raw, client_ip, user_agent,
                        message_key)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                     $6::text[], $7::text[], $8::text[])
ON CONFLICT (message_key) DO NOTHING
"""

_astuple = msgspec.structs.astuple


async def setup_connection(conn: Connection) -> None:
    """Pool `init`: the temp tables live as long as the connection."""
    await conn.execute(SETUP_SQL)


async def create_sink_pool(database_url: str | None, *, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        **connect_options(database_url),
        min_size=1,
        max_size=max_size,
        init=setup_connection,
        # The aggregate script is planned fresh for every batch; JIT would only add latency.
        server_settings={"jit": "off"},
    )
    assert pool is not None
    return pool


def unique_events(events: list[EnrichedEvent]) -> list[EnrichedEvent]:
    """First occurrence of each event_id: a batch may hold one event twice (two messages)."""
    # Keyed by the UUID's int: UUID.__hash__ is Python code, ~1 us per event here.
    seen: dict[int, EnrichedEvent] = {}
    for event in events:
        seen.setdefault(event.event_id.int, event)
    return list(seen.values()) if len(seen) != len(events) else events


class PostgresSink:
    """Writes batches through a pool made by `create_sink_pool` (it needs the temp tables)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def write(self, events: list[EnrichedEvent], bad: list[BadEvent]) -> int:
        """Write one batch in one transaction; return how many events were new.

        Afterwards every event carries its session id as stored (a redelivered event gets the
        id it was first stored with), ready for the next sink.
        """
        events = unique_events(events)
        pending = [event for event in events if not event.session_id]
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    inserted = await self._write(conn, events, bad)
                # Links this batch (or one whose process died before this step) recorded.
                await identities.merge_pending(conn)
                return inserted
        except BaseException:
            for event in pending:  # a retry must sessionize these again from committed state
                event.session_id = ""
            raise

    async def _write(
        self, conn: Connection, events: list[EnrichedEvent], bad: list[BadEvent]
    ) -> int:
        inserted = 0
        if events:
            state = await sessions.lock_state(conn, sessions.keys_needing_sessions(events))
            after = sessions.assign(events, state)
            # A generator: 5,000 rows held at once as tuples cost more in garbage collector
            # passes (each pass walks them all) than the tuples themselves.
            await conn.copy_records_to_table(
                "incoming", records=(_astuple(event) for event in events)
            )
            inserted = await self._insert_events(conn, len(events))
            if inserted < len(events):
                stored = {row[0]: row[1] for row in await conn.fetch(DROP_SEEN_SQL)}
                for event in events:
                    event.session_id = stored.get(event.event_id, event.session_id)
            if inserted:
                await conn.execute(AGGREGATES_SQL)
                if identities.linked_ids(events):
                    await conn.execute(identities.RECORD_LINKS_SQL)
            await sessions.save_state(conn, after)
        if bad:
            await conn.execute(INSERT_BAD_SQL, *_bad_columns(bad))
        return inserted

    @staticmethod
    async def _insert_events(conn: Connection, staged: int) -> int:
        """Insert the staged events (linked anonymous ids attributed first); return how many
        were new."""
        try:
            await conn.execute(
                identities.LOCK_SQL + identities.ATTRIBUTE_SQL + INSERT_NEW_EVENTS_SQL
            )
            return staged
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "events_pkey":
                raise
            await conn.execute(ROLLBACK_NEW_SQL)
        status = await conn.execute(INSERT_EVENTS_SQL)
        return int(status.split()[-1])


def _bad_columns(bad: list[BadEvent]) -> tuple[list[object], ...]:
    return (
        [b.received_at for b in bad],
        [b.source for b in bad],
        [b.reason for b in bad],
        [b.reason_class for b in bad],
        [b.raw for b in bad],
        [b.client_ip for b in bad],
        [b.user_agent for b in bad],
        [b.message_key for b in bad],
    )
