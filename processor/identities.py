"""Identity resolution in the PostgreSQL sink: `identify` links an anonymous id to a user id.

Set-based scripts (see processor.postgres and migrations 002 and 005):

- `ATTRIBUTE_SQL`, in every batch before its events are inserted: an event with only an
  anonymous id that is already linked counts for its user (`visitor_key` = user id), so a
  profile does not split again after the merge, even when events arrive late or out of order.
- `RECORD_LINKS_SQL`, in a batch after its aggregates: records the links that its new
  `identify` / `alias` events create (first link of an anonymous id wins), pending a merge.
- `MERGE_SQL`, run by `merge_pending` once that batch has committed, in a transaction of its
  own: for each pending link, folds the anonymous customer profile into the user's (counts,
  value, first/last seen, first source, last order, device, anonymous ids), deletes it, moves
  its sessions, raw events and unique-visitor rows to the user, and marks the link merged.

Only events new to `events` can record a link, and a link is merged once (its `merged_at`), so a
redelivered message or a repeated identify merges nothing twice. The unique-visitor tables
(visitor_minutes/hours/days, metrics_minute.unique_visitors) are re-keyed too, so every
aggregate still equals a recount from `events`. Only anonymous profiles (no user id) are merged;
an alias of a previous *user* id is recorded but leaves that user's profile as it is.

Concurrency. A merge must see every row of the anonymous id, no batch may add rows for it
unattributed once it has merged (else the profile splits again and unique-visitor counts drift
from the recount), and a merge's writes must not wait on rows in another order than a concurrent
batch's. So every batch locks the `identities` table in ROW EXCLUSIVE mode right before it
attributes (batches run side by side), and a merge takes SHARE ROW EXCLUSIVE: it waits for the
batches in flight, which attributed before the link was committed, and holds back the next ones
(which then see the link and attribute to the user) from that wait until its commit. A
batch takes that lock after its session-state rows and before any other row lock, and a merge
holds nothing before it and never touches session state, so whoever waits holds nothing the
other needs.

Why after the commit: a merge inside the linking batch made that batch run alone from its
attribution to its commit, and with a sign-in in nearly every batch, batches ran one at a time.
A merge still holds batches back, for less time: while it waits for the batches in flight no
new batch starts, and while it runs no batch runs. What that costs, measured: "Identity merges"
in benchmarks/README.md.

A link recorded by a batch whose merge did not run (the process died after the commit) is merged
by the next `merge_pending`, after any later batch of any worker, or when a worker starts.

Plans. The visitor tables are keyed (bucket, visitor_key) and have no index on visitor_key: the
merge finds the anonymous id's rows by the bucket keys of its events (moved through
events_visitor_idx), one primary-key probe each. Rows of events already pruned keep the
anonymous key (they count it as its own visitor, as before the link). benchmarks/
identity_merge_plan.py shows the plan on a seeded database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from processor.db import Connection
from processor.records import EnrichedEvent

LINK_EVENT_TYPES: Final = ("identify", "alias")

# Every batch, right before ATTRIBUTE_SQL; a merge, before MERGE_SQL (see "Concurrency" above).
LOCK_SQL: Final = "LOCK TABLE identities IN ROW EXCLUSIVE MODE;"
LOCK_MERGING_SQL: Final = "LOCK TABLE identities IN SHARE ROW EXCLUSIVE MODE;"
# One merger at a time; the others leave the pending links to it (it loops until none are left).
# Arbitrary constant, as the migrations' lock key.
MERGER_LOCK_KEY: Final = 0x636C6B6D  # "clkm"

ATTRIBUTE_SQL: Final = """
UPDATE incoming SET visitor_key = l.user_id
FROM identities l
WHERE incoming.user_id IS NULL AND incoming.anonymous_id = l.anonymous_id;
"""

RECORD_LINKS_SQL: Final = f"""
INSERT INTO identities (anonymous_id, user_id, linked_at)
SELECT DISTINCT ON (anonymous_id) anonymous_id, user_id, occurred_at
FROM fresh
WHERE event_type IN ({", ".join(f"'{t}'" for t in LINK_EVENT_TYPES)})
  AND anonymous_id IS NOT NULL AND user_id IS NOT NULL AND anonymous_id <> user_id
ORDER BY anonymous_id, occurred_at, event_id
ON CONFLICT (anonymous_id) DO NOTHING
"""

PENDING_SQL: Final = "SELECT EXISTS (SELECT FROM identities WHERE merged_at IS NULL)"


def _move_visitor_rows(table: str, bucket: str, keys: str) -> str:
    """CTEs that re-key `table`'s rows of linked anonymous ids to the user (one row per
    bucket and visitor: a bucket where both were active keeps one). `keys` computes the
    `bucket` columns from `moved_buckets`; each row is deleted by its primary key."""
    columns = [c.strip() for c in bucket.split(",")]
    return f"""{table}_removed AS (
    DELETE FROM {table} v
    USING (SELECT DISTINCT {keys}, visitor_key, user_id FROM moved_buckets) k ({bucket},
                                                                             visitor_key, user_id)
    WHERE {" AND ".join(f"v.{c} = k.{c}" for c in columns)} AND v.visitor_key = k.visitor_key
    RETURNING {", ".join(f"v.{c}" for c in columns)}, k.user_id
), {table}_added AS (
    INSERT INTO {table} ({bucket}, visitor_key)
    SELECT DISTINCT {bucket}, user_id FROM {table}_removed ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING {bucket}
)"""


MERGE_SQL: Final = f"""
WITH links AS (
    UPDATE identities SET merged_at = now() WHERE merged_at IS NULL
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
           (array_agg(last_order_id ORDER BY last_order_at DESC NULLS LAST))[1] AS last_order_id,
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
        last_order_id = CASE WHEN p.last_order_at > c.last_order_at OR c.last_order_at IS NULL
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
), moved_events AS (
    UPDATE events e SET visitor_key = a.user_id
    FROM anon a WHERE e.visitor_key = a.visitor_key AND e.user_id IS NULL
    RETURNING e.occurred_at, e.event_type, a.visitor_key, a.user_id
), moved_buckets AS (
    -- Where the anonymous id was active: exactly the keys of its unique-visitor rows.
    SELECT DISTINCT date_trunc('minute', occurred_at, 'UTC') AS minute, event_type,
           visitor_key, user_id
    FROM moved_events
),
{_move_visitor_rows("visitor_hours", "hour", "date_trunc('hour', minute, 'UTC')")},
{_move_visitor_rows("visitor_days", "day", "(minute AT TIME ZONE 'UTC')::date")},
{_move_visitor_rows("visitor_minutes", "minute, event_type", "minute, event_type")},
-- A minute where both ids were active now counts one visitor, not two.
fewer_visitors AS (
    UPDATE metrics_minute m SET unique_visitors = m.unique_visitors - d.visitors
    FROM (
        SELECT minute, event_type, sum(n) AS visitors
        FROM (SELECT minute, event_type, 1 AS n FROM visitor_minutes_removed
              UNION ALL
              SELECT minute, event_type, -1 FROM visitor_minutes_added) changes
        GROUP BY 1, 2 HAVING sum(n) > 0
    ) d
    WHERE m.minute = d.minute AND m.event_type = d.event_type
    RETURNING m.minute
)
SELECT count(*) FROM links
"""


async def merge_pending(conn: Connection) -> int:
    """Merge the links recorded and not merged yet; return how many merged here.

    Outside any transaction: each merge is one of its own. When another session is merging,
    this one leaves the pending links to it.
    """
    merged = 0
    while await conn.fetchval(PENDING_SQL):
        async with conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MERGER_LOCK_KEY):
                break
            await conn.execute(LOCK_MERGING_SQL)
            merged += await conn.fetchval(MERGE_SQL)
    return merged


def linked_ids(events: Iterable[EnrichedEvent]) -> list[str]:
    """The anonymous ids that the batch's link events would link (none: nothing to record)."""
    return sorted(
        {
            event.anonymous_id
            for event in events
            if event.event_type in LINK_EVENT_TYPES
            and event.anonymous_id
            and event.user_id
            and event.anonymous_id != event.user_id
        }
    )
