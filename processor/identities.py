"""Identity resolution in the PostgreSQL sink: `identify` links an anonymous id to a user id.

Per batch (see processor.postgres; tables from migrations 002, 005 and 201):

- `attribute`, before the batch is aggregated: an event with only an anonymous id that is
  already linked counts for its user (`visitor_key` = user id), so a profile does not split
  again after the merge, even when events arrive late or out of order.
- `record_links`, after its aggregates: records the links that its new events create (first
  link of an anonymous id wins), pending a merge. Any event that carries both an anonymous id
  and a user id links them, exactly as an `identify` does: a shop that sends its purchase with
  both (and never an identify) still ends with one profile holding the session and the order.
- `MERGE_SQL`, run by `merge_pending` in the round that applies that batch's deltas (in a
  savepoint of its own): for each pending link, folds the anonymous customer profile into the
  user's (counts, value, first/last seen, first source, last order, device, anonymous ids),
  deletes it, moves its sessions, activity rows (timeline) and unique-visitor rows to the
  user, and marks the link merged.

Only events new to `event_ids` can record a link. A merge moves what is stored under the
anonymous key when it runs, and deletes it there, so running it again moves nothing twice: a
redelivered message or a repeated identify merges nothing twice. The unique-visitor tables
(visitor_minutes/hours/days) are re-keyed too, so every
aggregate still equals a recount of the events sent. Only anonymous profiles (no user id) are
merged; an alias of a previous *user* id is recorded but leaves that user's profile as it is.

Concurrency, without a table lock. Batches never wait for merges: a batch only appends deltas
(processor.postgres), and merges run in the applier's rounds (`apply_pending`), one at a time,
each in the round's snapshot. A round applies whole batches, then merges the links pending, so
a merge moves an anonymous id's timeline rows (written with its batch) in the same round as
its visitor rows. The one race left: a batch that read the links before a new link committed
wrote the anonymous id's deltas unattributed, and may be applied after that link's merge. So
each round asks whether any profile it wrote is a linked anonymous id (`remerge_linked`, an
index probe per profile) and, if so, marks those links pending again; `merge_pending` then
moves those rows too. A merge may still lock rows in another order than another writer;
PostgreSQL then cancels one of them, and the round (or the merge) runs again.

Plans. The visitor tables are keyed (bucket, visitor_key) and have no index on visitor_key: the
merge finds the anonymous id's rows by the buckets its activity rows list (moved through
visitor_activity_visitor_idx), one primary-key probe each. Rows of activity already pruned keep
the anonymous key (they count it as its own visitor, as before the link). benchmarks/
identity_merge_plan.py shows the plan on a seeded database.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from processor.db import Connection
from processor.records import EnrichedEvent

# One merger at a time; the others leave the pending links to it (it loops until none are left).
# Arbitrary constant, as the migrations' lock key.
MERGER_LOCK_KEY: Final = 0x636C6B6D  # "clkm"
# Merges a deadlock cancelled, in a row, before `merge_pending` leaves the links pending for
# the next batch.
MERGE_ATTEMPTS: Final = 5

LINKS_SQL: Final = """
SELECT anonymous_id, user_id FROM identities WHERE anonymous_id = ANY($1::text[])
"""

RECORD_LINKS_SQL: Final = """
INSERT INTO identities (anonymous_id, user_id, linked_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (anonymous_id) DO NOTHING
"""

REMERGE_SQL: Final = """
UPDATE identities SET merged_at = NULL
WHERE anonymous_id = ANY($1::text[]) AND merged_at IS NOT NULL
"""

PENDING_SQL: Final = "SELECT EXISTS (SELECT FROM identities WHERE merged_at IS NULL)"
PENDING_IDS_SQL: Final = """
SELECT coalesce(array_agg(anonymous_id ORDER BY anonymous_id), '{}') FROM identities
WHERE merged_at IS NULL
"""
# Before the merge reads the anonymous profiles, in a statement of its own: a batch that is
# updating one commits first, and the merge's next statement (a new snapshot) sees its counts;
# no batch changes them until the merge commits (see "Concurrency" above).
LOCK_PROFILES_SQL: Final = """
SELECT FROM customers WHERE visitor_key = ANY($1::text[]) ORDER BY visitor_key FOR UPDATE
"""


async def attribute(conn: Connection, events: list[EnrichedEvent]) -> None:
    """Give the events of linked anonymous ids (and no user id) their user as visitor."""
    anonymous = {e.anonymous_id for e in events if e.user_id is None and e.anonymous_id}
    if not anonymous:
        return
    links = {row[0]: row[1] for row in await conn.fetch(LINKS_SQL, sorted(anonymous))}
    if links:
        for event in events:
            if event.user_id is None and event.anonymous_id in links:
                event.visitor_key = links[event.anonymous_id]


async def record_links(conn: Connection, events: list[EnrichedEvent]) -> None:
    """Record the links the batch's new events create (the first of an anonymous id): every
    event with both ids links them, whatever its type."""
    first: dict[str, EnrichedEvent] = {}
    for event in events:
        if _links(event):
            assert event.anonymous_id is not None
            known = first.get(event.anonymous_id)
            if known is None or (event.occurred_at, event.event_id.int) < (
                known.occurred_at,
                known.event_id.int,
            ):
                first[event.anonymous_id] = event
    if first:
        ids = sorted(first)
        await conn.execute(
            RECORD_LINKS_SQL,
            ids,
            [first[i].user_id for i in ids],
            [first[i].occurred_at for i in ids],
        )


async def remerge_linked(conn: Connection, anonymous_ids: list[str]) -> None:
    """Outside the batch's transaction, after its commit: mark the links of these ids (if any
    committed meanwhile) pending, so that the rows the batch wrote under them are merged."""
    if anonymous_ids:
        await conn.execute(REMERGE_SQL, anonymous_ids)


def _links(event: EnrichedEvent) -> bool:
    return bool(event.anonymous_id and event.user_id and event.anonymous_id != event.user_id)


def _move_visitor_rows(table: str, bucket: str, key: str) -> str:
    """CTEs that re-key `table`'s rows of linked anonymous ids to the user (one row per
    `bucket` and visitor: a bucket where both were active keeps one). `key` computes the
    bucket from `moved_buckets`' minute; each row is deleted by its primary key."""
    return f"""{table}_removed AS (
    DELETE FROM {table} v
    USING (SELECT DISTINCT {key}, visitor_key, user_id FROM moved_buckets) k ({bucket},
                                                                           visitor_key, user_id)
    WHERE v.{bucket} = k.{bucket} AND v.visitor_key = k.visitor_key
    RETURNING v.{bucket}, k.user_id
), {table}_added AS (
    INSERT INTO {table} ({bucket}, visitor_key)
    SELECT DISTINCT {bucket}, user_id FROM {table}_removed ORDER BY 1, 2
    ON CONFLICT DO NOTHING
)"""


MERGE_SQL: Final = f"""
WITH links AS (
    UPDATE identities SET merged_at = now()
    WHERE merged_at IS NULL AND anonymous_id = ANY($1::text[])
    RETURNING anonymous_id, user_id
), anon AS (
    -- The anonymous profiles to merge (a linked id that is some user's own key is left alone).
    SELECT l.user_id, c.visitor_key, c.anonymous_ids, c.first_seen_at, c.last_seen_at, c.events,
           c.sessions, c.orders, c.lifetime_value, c.last_order_id, c.last_order_at,
           c.first_source, c.device_type
    FROM links l JOIN customers c ON c.visitor_key = l.anonymous_id AND c.user_id IS NULL
), ids AS (
    SELECT a.user_id, array_agg(DISTINCT id ORDER BY id) AS anonymous_ids
    FROM anon a CROSS JOIN LATERAL unnest(a.anonymous_ids || a.visitor_key) AS id
    GROUP BY a.user_id
), per_user AS (
    SELECT user_id,
           min(first_seen_at) AS first_seen_at,
           max(last_seen_at) AS last_seen_at,
           sum(events) AS events,
           sum(sessions) AS sessions,
           sum(orders) AS orders,
           sum(lifetime_value) AS lifetime_value,
           (array_agg(last_order_id
                       ORDER BY last_order_at DESC NULLS LAST, last_order_id COLLATE "C"))[1]
               AS last_order_id,
           max(last_order_at) AS last_order_at,
           (array_agg(first_source ORDER BY first_seen_at))[1] AS first_source,
           (array_agg(device_type ORDER BY last_seen_at DESC))[1] AS device_type
    FROM anon GROUP BY user_id
), merged AS (
    UPDATE customers c SET
        anonymous_ids = ARRAY(SELECT DISTINCT unnest(c.anonymous_ids || i.anonymous_ids)
                              ORDER BY 1),
        first_seen_at = least(c.first_seen_at, p.first_seen_at),
        last_seen_at = greatest(c.last_seen_at, p.last_seen_at),
        events = c.events + p.events,
        sessions = c.sessions + p.sessions,
        orders = c.orders + p.orders,
        lifetime_value = c.lifetime_value + p.lifetime_value,
        last_order_id = CASE WHEN c.last_order_at IS NULL OR p.last_order_at > c.last_order_at
                                  OR p.last_order_at = c.last_order_at
                                     AND p.last_order_id < c.last_order_id COLLATE "C"
                             THEN coalesce(p.last_order_id, c.last_order_id)
                             ELSE c.last_order_id END,
        last_order_at = greatest(c.last_order_at, p.last_order_at),
        first_source = CASE WHEN p.first_seen_at < c.first_seen_at
                            THEN p.first_source ELSE c.first_source END,
        device_type = CASE WHEN p.last_seen_at > c.last_seen_at
                           THEN p.device_type ELSE c.device_type END
    FROM per_user p JOIN ids i USING (user_id)
    WHERE c.visitor_key = p.user_id
    RETURNING c.visitor_key
), removed AS (
    DELETE FROM customers c USING anon a WHERE c.visitor_key = a.visitor_key
    RETURNING c.visitor_key
), moved_sessions AS (
    UPDATE sessions s SET visitor_key = a.user_id, user_id = coalesce(s.user_id, a.user_id)
    FROM anon a WHERE s.visitor_key = a.visitor_key
    RETURNING s.session_id
), moved_activity AS (
    UPDATE visitor_activity v SET visitor_key = a.user_id
    FROM anon a WHERE v.visitor_key = a.visitor_key
    RETURNING v.minutes, a.visitor_key, a.user_id
), moved_buckets AS (
    -- Where the anonymous id was active: exactly the minutes of its unique-visitor rows.
    SELECT DISTINCT minute, m.visitor_key, m.user_id
    FROM moved_activity m CROSS JOIN LATERAL unnest(m.minutes) AS minute
),
{_move_visitor_rows("visitor_hours", "hour", "date_trunc('hour', minute, 'UTC')")},
{_move_visitor_rows("visitor_days", "day", "(minute AT TIME ZONE 'UTC')::date")},
{_move_visitor_rows("visitor_minutes", "minute", "minute")}
SELECT count(*) FROM links
"""


async def merge_pending(conn: Connection) -> int:
    """Merge the links recorded and not merged yet; return how many merged here.

    Outside any transaction: each merge is one of its own. When another session is merging,
    this one leaves the pending links to it.
    """
    merged, cancelled = 0, 0
    while await conn.fetchval(PENDING_SQL):
        try:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MERGER_LOCK_KEY):
                    break
                pending = await conn.fetchval(PENDING_IDS_SQL)
                await conn.execute(LOCK_PROFILES_SQL, pending)
                merged += await conn.fetchval(MERGE_SQL, pending)
        except asyncpg.DeadlockDetectedError:
            cancelled += 1
            if cancelled == MERGE_ATTEMPTS:
                break
    return merged
