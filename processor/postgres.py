"""The PostgreSQL sink: exactly once in effect; concurrent batches do not wait for each other's
row locks, and PostgreSQL's work grows with the distinct keys of what it applies, not events.

Per batch, on one pooled connection and in one transaction:

1. lock and read the session state of the batch's visitors, assign sessions (`processor.sessions`);
2. COPY the batch's event ids into `event_ids` (sorted, so concurrent batches holding the same
   ids wait for each other instead of deadlocking). Nearly every batch is all new; when one
   holds an id stored before (a redelivery, the same event in two messages, a concurrent
   batch), the COPY fails on the key, is rolled back to its savepoint, and the ids go in again
   with `ON CONFLICT DO NOTHING RETURNING`: the returned ones are the new events. That is the
   only per-event row PostgreSQL writes;
3. attribute anonymous events of linked ids to their user (`processor.identities`), then
   aggregate the new events here, in the processor (`BatchAggregates`): one row per visitor and
   minute / hour / day, per session, per customer, per session and funnel step, per product and
   hour, and per minute x type;
4. COPY one `visitor_activity` row per visitor (its newest events for the dashboard's timeline,
   and where it was active) and the aggregates as deltas (migration 303: append-only tables
   that no other batch touches), leaving out the rows this process saw committed and no delta
   could change (`KnownRows`: a visitor's minute, hour and day, a funnel step reached no later);
5. record new identity links, save the session state, insert bad events (deduplicated by
   `message_key`), commit.

Then `apply_pending`: one session at a time (an advisory lock; the others return at once) folds
every committed delta into the aggregates, many batches per round, one set-based upsert per
table in key order, and merges the identity links pending. A batch's deltas are applied by its
own session or by the one applying when it asks, in a round that starts after its commit; under
sustained load an applier hands on after `APPLY_BUDGET` seconds to a batch in flight, so that no
batch waits on rounds for others for long.

A redelivered message, or the same event in two messages, adds no new id in step 2 and so
appends no delta; a round claims the deltas it applies (DELETE ... RETURNING) in the same
transaction as it applies them. Before the deltas, concurrent batches of the same shoppers
waited for each other's row locks on their sessions, profiles and visitor rows
(benchmarks/README.md, push topology). What each statement costs PostgreSQL per event:
benchmarks/processor_pg_profile.py (figures in benchmarks/README.md).
Hours and days are UTC. Amounts are rounded to cents as PostgreSQL's numeric(14, 2) rounds them,
then converted to the reporting currency at the rate of their day (`processor.currency`); an
order whose currency has no rate is counted apart (`unconverted_revenue_hour`) and adds to no
revenue. The timeline keeps each order's amount and currency as sent.
"""

from __future__ import annotations

import logging
import operator
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, TypeAlias

import asyncpg
import msgspec

from clickstream_contract.config import Settings, connect_options
from processor import currency, identities, sessions
from processor.db import Connection
from processor.records import BadEvent, EnrichedEvent, RefusedData, unique_events

log = logging.getLogger(__name__)

FUNNEL_STEPS: Final = ("product_view", "add_to_cart", "begin_checkout", "purchase")
PRODUCT_EVENTS: Final = ("product_view", "add_to_cart", "remove_from_cart")
# How many of a visitor's newest events of a batch its timeline row keeps (the dashboard shows 50).
TIMELINE_EVENTS: Final = 50

INSERT_IDS_SQL: Final = """
INSERT INTO event_ids (event_id, session_id)
SELECT * FROM unnest($1::uuid[], $2::uuid[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""
STORED_SESSIONS_SQL: Final = """
SELECT event_id, session_id::text FROM event_ids
WHERE event_id = ANY($1::uuid[]) AND session_id IS NOT NULL
"""
# `received_at` is left to its default, the time the key is stored (migration 308).
DEDUP_KEY_COLUMNS: Final = ("event_id", "session_id")

# The rows each batch appends (migration 303), in the order `_append_deltas` writes them.
DELTA_TABLES: Final = (
    "delta_visitor_hours", "delta_visitor_days", "delta_sessions", "delta_customers",
    "delta_funnel_steps", "delta_products", "delta_unconverted", "delta_visitor_minutes",
    "delta_minutes",
)  # fmt: skip

# The applier's statements, in one transaction. Each claims every committed delta of its table
# (DELETE ... RETURNING: rows committed after its snapshot wait for the next round), folds them
# per key (a key may have deltas of several batches) and upserts the result in key order.
# Counters add up; a session's or profile's first attributes are those of its earliest delta.
APPLY_VISITORS_SQL: Final = """
WITH d AS (DELETE FROM delta_visitor_minutes RETURNING minute, visitor_key)
INSERT INTO visitor_minutes (minute, visitor_key)
SELECT DISTINCT minute, visitor_key FROM d ORDER BY 1, 2
ON CONFLICT DO NOTHING;

WITH d AS (DELETE FROM delta_visitor_hours RETURNING hour, visitor_key)
INSERT INTO visitor_hours (hour, visitor_key)
SELECT DISTINCT hour, visitor_key FROM d ORDER BY 1, 2
ON CONFLICT DO NOTHING;

WITH d AS (DELETE FROM delta_visitor_days RETURNING day, visitor_key)
INSERT INTO visitor_days (day, visitor_key)
SELECT DISTINCT day, visitor_key FROM d ORDER BY 1, 2
ON CONFLICT DO NOTHING;
"""

# The sessions and customers statements fold a key's deltas with window functions over one
# scan: no join. The planner's row estimates for the delta tables are worthless (a vacuum or an
# analyze that found one nearly empty leaves estimates of one row, whatever is pending), and a
# join planned for one row is a nested loop: quadratic, 13 s instead of 0.1 s for 5,000 rows.
#
# Also counts the sessions it created per hour and source, and per hour and device; returns
# them per visitor, for the customers statement.
APPLY_SESSIONS_SQL: Final = """
WITH d AS (DELETE FROM delta_sessions RETURNING *),
folded AS (
    SELECT DISTINCT ON (session_id) session_id, visitor_key, anonymous_id, landing_url,
           referrer_class, utm_source, utm_medium, utm_campaign, device_type, browser, os,
           started_at, max(last_seen_at) OVER session AS last_seen_at,
           sum(events) OVER session AS events, sum(page_views) OVER session AS page_views,
           (array_agg(user_id) FILTER (WHERE user_id IS NOT NULL) OVER session)[1] AS user_id,
           bool_or(purchased) OVER session AS purchased, sum(revenue) OVER session AS revenue
    FROM d
    WINDOW session AS (PARTITION BY session_id ORDER BY started_at
                       ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    ORDER BY session_id, started_at
),
upserted AS (
    INSERT INTO sessions (session_id, visitor_key, anonymous_id, user_id, started_at,
                          last_seen_at, events, page_views, landing_url, referrer_class,
                          utm_source, utm_medium, utm_campaign, device_type, browser, os,
                          purchased, revenue)
    SELECT session_id, visitor_key, anonymous_id, user_id, started_at, last_seen_at, events,
           page_views, landing_url, referrer_class, utm_source, utm_medium, utm_campaign,
           device_type, browser, os, purchased, revenue
    FROM folded
    ORDER BY session_id
    ON CONFLICT (session_id) DO UPDATE SET
        started_at = least(sessions.started_at, excluded.started_at),
        last_seen_at = greatest(sessions.last_seen_at, excluded.last_seen_at),
        events = sessions.events + excluded.events,
        page_views = sessions.page_views + excluded.page_views,
        user_id = coalesce(sessions.user_id, excluded.user_id),
        purchased = sessions.purchased OR excluded.purchased,
        revenue = sessions.revenue + excluded.revenue
    RETURNING xmax = 0 AS inserted, visitor_key, date_trunc('hour', started_at, 'UTC') AS hour,
              referrer_class, utm_source, utm_medium, device_type, browser, os
),
created AS (SELECT * FROM upserted WHERE inserted),
traffic AS (
    INSERT INTO traffic_hour (hour, referrer_class, utm_source, utm_medium, sessions)
    SELECT hour, referrer_class, coalesce(utm_source, ''), coalesce(utm_medium, ''), count(*)
    FROM created GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, referrer_class, utm_source, utm_medium)
    DO UPDATE SET sessions = traffic_hour.sessions + excluded.sessions
),
devices AS (
    INSERT INTO devices_hour (hour, device_type, browser, os, sessions)
    SELECT hour, device_type, coalesce(browser, ''), coalesce(os, ''), count(*)
    FROM created GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, device_type, browser, os)
    DO UPDATE SET sessions = devices_hour.sessions + excluded.sessions
)
SELECT visitor_key, count(*) AS sessions FROM created GROUP BY visitor_key
"""

# $1: the sessions created per visitor, a JSON object (looked up per row: a join could be
# planned as a nested loop, above). Anonymous ids of several deltas are concatenated
# (`array_cat_agg`, migration 306), then sorted once. Returns every profile it wrote.
APPLY_CUSTOMERS_SQL: Final = """
WITH d AS (DELETE FROM delta_customers RETURNING *),
folded AS (
    SELECT DISTINCT ON (visitor_key) visitor_key, first_seen_at, first_source,
           count(*) OVER visitor AS deltas,
           array_cat_agg(anonymous_ids) OVER visitor AS anonymous_ids,
           max(user_id) OVER visitor AS user_id,
           max(last_seen_at) OVER visitor AS last_seen_at,
           sum(events) OVER visitor AS events, sum(orders) OVER visitor AS orders,
           sum(lifetime_value) OVER visitor AS lifetime_value,
           first_value(device_type) OVER newest AS device_type,
           max(last_order_at) OVER visitor AS last_order_at,
           first_value(last_order_id) OVER last_order AS last_order_id
    FROM d
    WINDOW visitor AS (PARTITION BY visitor_key),
           newest AS (PARTITION BY visitor_key ORDER BY last_seen_at DESC),
           last_order AS (PARTITION BY visitor_key
                        ORDER BY last_order_at DESC NULLS LAST, last_order_id COLLATE "C")
    ORDER BY visitor_key, first_seen_at
)
INSERT INTO customers (visitor_key, user_id, anonymous_ids, first_seen_at, last_seen_at, events,
                       sessions, orders, lifetime_value, last_order_id, last_order_at,
                       first_source, device_type)
SELECT visitor_key, user_id,
       CASE WHEN deltas = 1 THEN anonymous_ids
            ELSE ARRAY(SELECT DISTINCT unnest(anonymous_ids) ORDER BY 1) END,
       first_seen_at, last_seen_at, events, coalesce(($1::jsonb ->> visitor_key)::bigint, 0),
       orders, lifetime_value, last_order_id, last_order_at, first_source, device_type
FROM folded
ORDER BY visitor_key
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
    last_order_id = CASE WHEN customers.last_order_at IS NULL
                              OR excluded.last_order_at > customers.last_order_at
                              OR excluded.last_order_at = customers.last_order_at
                                 AND excluded.last_order_id < customers.last_order_id COLLATE "C"
                         THEN coalesce(excluded.last_order_id, customers.last_order_id)
                         ELSE customers.last_order_id END,
    last_order_at = greatest(customers.last_order_at, excluded.last_order_at),
    first_source = CASE WHEN excluded.first_seen_at < customers.first_seen_at
                        THEN excluded.first_source ELSE customers.first_source END,
    device_type = CASE WHEN excluded.last_seen_at >= customers.last_seen_at
                       THEN excluded.device_type ELSE customers.device_type END
RETURNING visitor_key
"""

# Last, the rows that every round touches (this hour's and this minute's counters, and the
# dashboard rollups their triggers keep).
APPLY_COUNTERS_SQL: Final = """
WITH d AS (DELETE FROM delta_funnel_steps RETURNING *)
INSERT INTO funnel_steps (session_id, step, reached_at)
SELECT session_id, step, min(reached_at) FROM d GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (session_id, step) DO UPDATE SET reached_at = excluded.reached_at
WHERE excluded.reached_at < funnel_steps.reached_at;

WITH d AS (DELETE FROM delta_products RETURNING *)
INSERT INTO product_metrics_hour (hour, product_id, product_name, category, views, carts,
                                  removals, units, revenue)
SELECT hour, product_id, max(product_name), max(category), sum(views), sum(carts),
       sum(removals), sum(units), sum(revenue)
FROM d GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (hour, product_id) DO UPDATE SET
    product_name = coalesce(excluded.product_name, product_metrics_hour.product_name),
    category = coalesce(excluded.category, product_metrics_hour.category),
    views = product_metrics_hour.views + excluded.views,
    carts = product_metrics_hour.carts + excluded.carts,
    removals = product_metrics_hour.removals + excluded.removals,
    units = product_metrics_hour.units + excluded.units,
    revenue = product_metrics_hour.revenue + excluded.revenue;

WITH d AS (DELETE FROM delta_unconverted RETURNING *)
INSERT INTO unconverted_revenue_hour (hour, currency, orders, revenue)
SELECT hour, currency, sum(orders), sum(revenue) FROM d GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (hour, currency) DO UPDATE SET
    orders = unconverted_revenue_hour.orders + excluded.orders,
    revenue = unconverted_revenue_hour.revenue + excluded.revenue;

WITH d AS (DELETE FROM delta_minutes RETURNING *)
INSERT INTO metrics_minute (minute, event_type, events, revenue)
SELECT minute, event_type, sum(events), sum(revenue) FROM d GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (minute, event_type) DO UPDATE SET
    events = metrics_minute.events + excluded.events,
    revenue = metrics_minute.revenue + excluded.revenue;
"""

# Every batch appends minute counts: any row here means deltas wait.
PENDING_DELTAS_SQL: Final = "SELECT EXISTS (SELECT FROM delta_minutes)"
# The database went away (refused, shut down, connection closed mid-statement).
CONNECTION_LOST: Final = (
    OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)  # fmt: skip
# Arbitrary constants, as the migrations' and the merger's lock keys.
APPLIER_LOCK_KEY: Final = 0x636C6170  # "clap"
TRY_LOCK_SQL: Final = "SELECT pg_try_advisory_xact_lock($1)"
# Every batch's transaction holds this lock, shared: an applier past its budget sees a batch in
# flight, which applies the deltas pending after its commit (`apply_pending`).
WRITER_LOCK_KEY: Final = 0x636C7772  # "clwr"
WRITER_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock_shared($1)"
WRITER_IN_FLIGHT_SQL: Final = """
SELECT EXISTS (
    SELECT FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = 0 AND objid = $1 AND objsubid = 1
)
"""
# Seconds an applier goes on with further rounds (batches committed while it applied) before it
# leaves them to a batch in flight. Under sustained load every round finds new batches: without
# a bound, the batch (and the push invocations) that took the lock would wait until the load
# stops, past the function's timeout.
APPLY_BUDGET: Final = 10.0
# An identity merge (another session's) may lock rows in another order than a round, or commit
# a change to a row the round's snapshot is older than: the round is rolled back and run again.
APPLY_CONFLICTS: Final = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

INSERT_BAD_SQL: Final = """
INSERT INTO bad_events (received_at, source, reason, reason_class, raw, client_ip, user_agent,
                        message_key)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                     $6::text[], $7::text[], $8::text[])
ON CONFLICT (message_key) DO NOTHING
"""

# The sink's sessions: every statement is planned for its arrays, and JIT would only add
# latency. Its lookups by key (links of a batch's anonymous ids, rows to upsert) hit pages that
# are cached or on SSD (Cloud SQL): at the default random_page_cost of 4 the planner scans all
# 200,000 links to find a batch's 4,000 (165 ms) instead of probing the index (15 ms),
# benchmarks/identity_merge_plan.py.
SINK_SERVER_SETTINGS: Final = {"jit": "off", "random_page_cost": "1.1"}

# A transaction that PostgreSQL cancelled to break a deadlock (a batch's identity links, or an
# apply round, against an identity merge whose row order cannot follow theirs everywhere) is run
# again at once: it was rolled back whole, and after a batch's commit a rewrite finds every id
# stored and changes nothing.
DEADLOCK_ATTEMPTS: Final = 3

ACTIVITY_COLUMNS: Final = ("visitor_key", "received_at", "last_at", "minutes", "events")

_CENT: Final = Decimal("0.01")
_EVENT_ID_INT: Final = operator.attrgetter("event_id.int")


def money(value: float | None) -> Decimal:
    """An amount as PostgreSQL stores a float8 in numeric(14, 2): its 15 significant digits,
    rounded half away from zero to cents."""
    if value is None:
        return Decimal(0)
    return Decimal(f"{value:.15g}").quantize(_CENT, ROUND_HALF_UP)


class TimelineEntry(msgspec.Struct, omit_defaults=True):
    """One event as the dashboard's customer timeline shows it (`visitor_activity.events`)."""

    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    session_id: str
    anonymous_id: str | None = None
    page_path: str | None = None
    page_title: str | None = None
    product_id: str | None = None
    product_name: str | None = None
    price: float | None = None
    quantity: int | None = None
    order_id: str | None = None
    revenue: float | None = None
    currency: str | None = None


_encode_json = msgspec.json.Encoder().encode
_decode_items = msgspec.json.Decoder(list[dict[str, Any]]).decode
_decode_timeline = _decode_items


def _order(event: EnrichedEvent) -> tuple[datetime, int]:
    """The order in which a key's "first" and "last" events are picked (time, then id)."""
    return event.occurred_at, event.event_id.int


class BatchAggregates:
    """A batch's new events, aggregated per key as the tables below store them.

    Built once per batch; each `*_rows` method returns the rows of one delta table.
    """

    def __init__(self, events: list[EnrichedEvent], rates: currency.Rates) -> None:
        # In time order (then id): every group below is too, so a key's first event is its
        # group's first, and its newest is found from the end.
        events.sort(key=_order)
        self.events = events
        # Per purchase (by event id), its revenue in the reporting currency; purchases without
        # a rate are left out here and counted per (hour, currency) in `unconverted`.
        self.revenue: dict[int, Decimal] = {}
        self.unconverted: dict[tuple[datetime, str], list[Any]] = {}
        # (hour, day) per UTC minute; minutes per epoch minute (one datetime object each).
        self.hours: dict[datetime, tuple[datetime, Any]] = {}
        minute_of: dict[int, datetime] = {}
        by_visitor: defaultdict[str, list[EnrichedEvent]] = defaultdict(list)
        by_session: defaultdict[str, list[EnrichedEvent]] = defaultdict(list)
        minutes: dict[tuple[datetime, str], list[Any]] = {}
        visitor_minutes: set[tuple[datetime, str]] = set()
        funnel: dict[tuple[str, str], datetime] = {}
        products: dict[tuple[datetime, str], list[Any]] = {}
        for event in events:
            at = event.occurred_at
            epoch_minute = int(at.timestamp() // 60)
            minute = minute_of.get(epoch_minute)
            if minute is None:
                minute = minute_of[epoch_minute] = self._minute(epoch_minute)
            visitor, kind = event.visitor_key, event.event_type
            by_visitor[visitor].append(event)
            by_session[event.session_id].append(event)
            key = (minute, kind)
            counts = minutes.get(key)
            if counts is None:
                counts = minutes[key] = [0, Decimal(0)]
            counts[0] += 1
            visitor_minutes.add((minute, visitor))
            if kind in FUNNEL_STEPS:
                step = (event.session_id, kind)
                reached = funnel.get(step)
                if reached is None or at < reached:
                    funnel[step] = at
            if kind == "purchase":
                hour, day = self.hours[minute]
                converted = rates.convert(money(event.revenue), event.currency, day)
                if converted is None:
                    self._count_unconverted(hour, event)
                else:
                    self.revenue[event.event_id.int] = converted
                    counts[1] += converted
                _add_purchase(products, hour, event, rates, day)
            elif kind in PRODUCT_EVENTS and event.product_id is not None:
                _add_product(
                    products, self.hours[minute][0], event.product_id, event.product_name,
                    event.category, PRODUCT_EVENTS.index(kind), 1, 0,
                )  # fmt: skip
        self.by_visitor = by_visitor
        self.by_session = by_session
        self.minutes = minutes
        self.visitor_minutes = visitor_minutes
        self.funnel = funnel
        self.products = products

    def _count_unconverted(self, hour: datetime, event: EnrichedEvent) -> None:
        assert event.currency is not None  # an amount without currency needs no rate
        row = self.unconverted.get((hour, event.currency))
        if row is None:
            row = self.unconverted[(hour, event.currency)] = [0, Decimal(0)]
        row[0] += 1
        row[1] += money(event.revenue)

    def _minute(self, epoch_minute: int) -> datetime:
        minute = datetime.fromtimestamp(epoch_minute * 60, UTC)
        self.hours[minute] = (minute.replace(minute=0), minute.date())
        return minute

    def visitor_hours(self, known: set[tuple[datetime, str]]) -> list[tuple[datetime, str]]:
        """(hour, visitor) rows to append, but those in `known`."""
        hours = self.hours
        return list({(hours[m][0], v) for m, v in self.visitor_minutes} - known)

    def visitor_days(self, known: set[tuple[date, str]]) -> list[tuple[date, str]]:
        """(day, visitor) rows to append, but those in `known`."""
        hours = self.hours
        return list({(hours[m][1], v) for m, v in self.visitor_minutes} - known)

    def sessions_rows(self) -> list[tuple[Any, ...]]:
        rows = []
        for session_id, group in self.by_session.items():
            first = group[0]
            page_views, purchased, revenue = 0, False, Decimal(0)
            for e in group:
                if e.event_type == "page_view":
                    page_views += 1
                elif e.event_type == "purchase":
                    purchased = True
                    revenue += self.revenue.get(e.event_id.int, 0)
            rows.append((
                session_id, first.visitor_key, first.anonymous_id, first.user_id,
                first.occurred_at, group[-1].occurred_at, len(group), page_views,
                first.page_url, first.referrer_class, first.utm_source, first.utm_medium,
                first.utm_campaign, first.device_type, first.browser, first.os, purchased,
                revenue,
            ))  # fmt: skip
        return rows

    def customers_rows(self) -> list[tuple[Any, ...]]:
        """Per visitor, its profile's delta; the sessions it started are counted when applied
        (the sessions statement knows which were new)."""
        rows: list[tuple[Any, ...]] = []
        for visitor, group in self.by_visitor.items():
            first, last = group[0], _newest(group)
            user_id, orders, value, last_order = None, 0, Decimal(0), None
            anonymous_ids = set()
            for e in group:
                if e.user_id is not None and (user_id is None or e.user_id > user_id):
                    user_id = e.user_id
                if e.anonymous_id:
                    anonymous_ids.add(e.anonymous_id)
                if e.event_type == "purchase":
                    orders += 1
                    value += self.revenue.get(e.event_id.int, 0)
                    if last_order is None or _newer_order(e, last_order):
                        last_order = e
            rows.append((
                visitor, user_id, sorted(anonymous_ids), first.occurred_at, last.occurred_at,
                len(group), orders, value, last_order.order_id if last_order else None,
                last_order.occurred_at if last_order else None,
                first.utm_source or first.referrer_class, last.device_type,
            ))  # fmt: skip
        return rows

    def funnel_steps(
        self, known: dict[tuple[str, str], datetime]
    ) -> list[tuple[str, str, datetime]]:
        """(session, step, reached_at) rows to append, but the steps `known` to be
        reached no later."""
        rows = []
        for key, reached in self.funnel.items():
            before = known.get(key)
            if before is None or reached < before:
                rows.append((*key, reached))
        return rows

    def products_rows(self) -> list[tuple[Any, ...]]:
        return [(*key, *row) for key, row in self.products.items()]

    def unconverted_rows(self) -> list[tuple[Any, ...]]:
        return [(*key, *row) for key, row in self.unconverted.items()]

    def visitor_minutes_rows(self, known: set[tuple[datetime, str]]) -> list[tuple[datetime, str]]:
        """(minute, visitor) rows to append, but those in `known`."""
        return list(self.visitor_minutes - known)

    def minute_rows(self) -> list[tuple[Any, ...]]:
        return [(*key, *row) for key, row in self.minutes.items()]

    def activity_records(self) -> list[tuple[Any, ...]]:
        """One `visitor_activity` row per visitor: its newest events (the timeline, in no
        particular order: readers sort them) and where it was active. `received_at` (for
        pruning) is the batch's newest."""
        active: defaultdict[str, list[datetime]] = defaultdict(list)
        for minute, visitor in self.visitor_minutes:
            active[visitor].append(minute)
        received_at = max(e.received_at for e in self.events)
        records = []
        for visitor, group in self.by_visitor.items():
            timeline = [
                TimelineEntry(
                    e.event_id, e.event_type, e.occurred_at, e.session_id, e.anonymous_id,
                    e.page_path, e.page_title, e.product_id, e.product_name, e.price,
                    e.quantity, e.order_id, e.revenue, e.currency,
                )
                for e in group[-TIMELINE_EVENTS:]
            ]  # fmt: skip
            encoded = _encode_json(timeline)
            if b"\\u0000" in encoded and _holds_nul(encoded):
                raise RefusedData(
                    f"an event of visitor {visitor!r} holds a NUL character in its text,"
                    " which PostgreSQL cannot store"
                )
            records.append(
                (visitor, received_at, group[-1].occurred_at, active[visitor], encoded.decode())
            )
        return records


def _holds_nul(timeline: bytes) -> bool:
    """Whether a string in the encoded timeline holds NUL (not merely the text "\\u0000")."""
    return any(
        "\x00" in value
        for entry in _decode_timeline(timeline)
        for value in entry.values()
        if isinstance(value, str)
    )


def _add_purchase(
    products: dict[tuple[datetime, str], list[Any]],
    hour: datetime,
    event: EnrichedEvent,
    rates: currency.Rates,
    day: date,
) -> None:
    """A purchase counts its order's items, or, without items, the product it carries; their
    revenue in the reporting currency (none when the order's currency has no rate)."""
    if event.order_items is None:
        quantity = event.quantity if event.quantity is not None else 1
        converted = rates.convert(money(event.price) * quantity, event.currency, day)
        _add_product(
            products, hour, event.product_id, event.product_name, event.category, 3, quantity,
            converted or 0,
        )  # fmt: skip
        return
    for item in _decode_items(event.order_items):
        units: int = item.get("quantity", 1)
        price = item.get("price")
        line = Decimal(repr(price)) * units if price is not None else Decimal(0)
        revenue = rates.convert(line, event.currency, day) or 0
        _add_product(
            products, hour, item.get("product_id"), item.get("name"), item.get("category"), 3,
            units, revenue,
        )  # fmt: skip


def _newest(group: list[EnrichedEvent]) -> EnrichedEvent:
    """The newest event of a group in time order; at the same time, the smallest id (as
    ORDER BY occurred_at DESC, event_id picks it)."""
    index = len(group) - 1
    while index and group[index - 1].occurred_at == group[index].occurred_at:
        index -= 1
    return group[index]


def _newer_order(purchase: EnrichedEvent, than: EnrichedEvent) -> bool:
    """Whether a purchase is a profile's last order rather than another: the newer; at the same
    time, the smaller order id by code point. Every statement that keeps `last_order_id` breaks
    ties the same way (COLLATE "C" in SQL), so the profile does not depend on which delivery or
    merge came first."""
    if purchase.occurred_at != than.occurred_at:
        return purchase.occurred_at > than.occurred_at
    return (purchase.order_id or "") < (than.order_id or "")


def _add_product(
    products: dict[tuple[datetime, str], list[Any]],
    hour: datetime,
    product_id: str | None,
    name: str | None,
    category: str | None,
    counter: int,
    amount: int,
    revenue: Decimal | int,
) -> None:
    """Count one product line: `counter` is 0 views, 1 carts, 2 removals, 3 units."""
    if product_id is None:
        return
    row = products.get((hour, product_id))
    if row is None:
        row = products[(hour, product_id)] = [None, None, 0, 0, 0, 0, Decimal(0)]
    row[0] = _max_text(row[0], name)
    row[1] = _max_text(row[1], category)
    row[2 + counter] += amount
    row[6] += revenue


def _max_text(a: str | None, b: str | None) -> str | None:
    """max() as SQL's aggregate takes it: NULLs left out."""
    return b if a is None else a if b is None else max(a, b)


def _columns(rows: list[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    """Rows -> one list per column (what `unnest($1::type[], ...)` takes)."""
    if not rows:
        return tuple([] for _ in range(width))
    return tuple(list(column) for column in zip(*rows, strict=True))


async def create_sink_pool(database_url: str | None, *, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        **connect_options(database_url),
        min_size=1,
        max_size=max_size,
        server_settings=SINK_SERVER_SETTINGS,
    )
    assert pool is not None
    return pool


async def start_sink(database_url: str | None, *, max_size: int) -> PostgresSink:
    """The sink a shell (worker, function instance) starts with.

    Checks that every migration is applied (a shell's role cannot migrate), and applies the
    deltas and merges the identity links that a processor committed and then died before
    applying: otherwise they would wait for the next batch. Losing the database during that
    catch-up does not stop the start: the next batch applies them, and retries as batches do.
    """
    from processor.migrations import require_migrated

    await require_migrated(database_url)
    pool = await create_sink_pool(database_url, max_size=max_size)
    try:
        async with pool.acquire() as conn:
            await apply_pending(conn)
    except CONNECTION_LOST as exc:
        log.warning("pending deltas not applied at start (%s); the next batch applies them", exc)
    return PostgresSink(pool)


class KnownRows:
    """Rows this process saw committed (as deltas) that a later delta could not change: a visitor
    counted in a minute, an hour or a day, a session's funnel step reached at
    some time. Later batches leave those keys out of their statements: a visitor active for
    hours costs PostgreSQL its hour and day rows once per process, not once per batch.

    Only committed rows are added (after the batch's commit); every row here only ever goes
    on existing or gets earlier, except when an erasure deletes it: then a process that knew
    it does not write it again until the key leaves this cache (the next hour or day, or a
    restart). Bounded: cleared whenever it would exceed `limit` keys.
    """

    def __init__(self, limit: int = 1_000_000) -> None:
        self.minutes: set[tuple[datetime, str]] = set()
        self.hours: set[tuple[datetime, str]] = set()
        self.days: set[tuple[date, str]] = set()
        self.steps: dict[tuple[str, str], datetime] = {}
        self.limit = limit

    def add(self, written: Written) -> None:
        minutes, hours, days, steps = written
        held = len(self.minutes) + len(self.hours) + len(self.days) + len(self.steps)
        if held + len(minutes) + len(hours) + len(days) + len(steps) > self.limit:
            self.minutes.clear()
            self.hours.clear()
            self.days.clear()
            self.steps.clear()
        self.minutes.update(minutes)
        self.hours.update(hours)
        self.days.update(days)
        for session_id, step, reached in steps:
            self.steps[(session_id, step)] = reached  # never later than a known one


def stamp_reporting_revenue(events: list[EnrichedEvent], rates: currency.Rates) -> None:
    """Give each purchase its revenue in the reporting currency (None without a rate), as the
    aggregates above count it, for the sinks after this one (BigQuery's events rows)."""
    for event in events:
        if event.event_type == "purchase":
            day = event.occurred_at.astimezone(UTC).date()
            event.revenue_reporting = rates.convert(money(event.revenue), event.currency, day)
            event.reporting_currency = rates.reporting


# What a batch's statements wrote that `KnownRows` keeps: visitor minutes, hours, days, funnel
# steps.
Written: TypeAlias = tuple[
    list[tuple[datetime, str]],
    list[tuple[datetime, str]],
    list[tuple[date, str]],
    list[tuple[str, str, datetime]],
]


class PostgresSink:
    """Writes batches through a pool made by `create_sink_pool`."""

    def __init__(self, pool: asyncpg.Pool, reporting_currency: str | None = None) -> None:
        self.pool = pool
        self.known = KnownRows()
        # Read once, as every setting: the deployment's setting unless a caller names one.
        self.reporting_currency = reporting_currency or Settings.from_env().reporting_currency

    async def write(self, events: list[EnrichedEvent], bad: list[BadEvent]) -> int:
        """Write one batch in one transaction; return how many events were new.

        Afterwards every event carries its session id as stored (a redelivered event gets the
        id it was first stored with) and every purchase its revenue in the reporting currency,
        ready for the next sink.
        """
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return await self._write_once(events, bad)
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                log.info("batch cancelled by a deadlock (attempt %d); writing it again", attempt)
        raise AssertionError("unreachable")

    async def _write_once(self, events: list[EnrichedEvent], bad: list[BadEvent]) -> int:
        pending = [event for event in events if not event.session_id]
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    fresh, written = await self._write(conn, events, pending, bad)
                self.known.add(written)
                await apply_pending(conn)
                return len(fresh)
        except BaseException:
            for event in pending:  # a retry must sessionize these again from committed state
                event.session_id = ""
            raise

    async def _write(
        self,
        conn: Connection,
        events: list[EnrichedEvent],
        pending: list[EnrichedEvent],
        bad: list[BadEvent],
    ) -> tuple[list[EnrichedEvent], Written]:
        fresh: list[EnrichedEvent] = []
        written: Written = ([], [], [], [])
        await conn.execute(WRITER_LOCK_SQL, WRITER_LOCK_KEY)
        if events:
            state = await sessions.lock_state(conn, sessions.keys_needing_sessions(events))
            after = sessions.assign(events, state)
            fresh = await self._insert_ids(conn, events, pending)
            # Every purchase of the batch, redelivered ones too: the next sinks write them all.
            rates = await currency.rates_for(
                conn,
                self.reporting_currency,
                ((e.currency, e.occurred_at.astimezone(UTC).date()) for e in events
                 if e.event_type == "purchase"),
            )  # fmt: skip
            stamp_reporting_revenue(events, rates)
            if fresh:
                await identities.attribute(conn, fresh)
                written = await self._append_deltas(conn, BatchAggregates(fresh, rates))
                await identities.record_links(conn, fresh)
            await sessions.save_state(conn, after)
        if bad:
            await conn.execute(INSERT_BAD_SQL, *_bad_columns(bad))
        return fresh, written

    @staticmethod
    async def _insert_ids(
        conn: Connection, events: list[EnrichedEvent], pending: list[EnrichedEvent]
    ) -> list[EnrichedEvent]:
        """Store the batch's event ids; return the events that were new, each once, in the
        batch's order (an id stored before, or twice in `events`, fails the COPY: then an
        INSERT ... ON CONFLICT DO NOTHING tells which are new).

        The ids go in sorted; the events come back as they came, nearly in time order, which
        the aggregation's sort by time then finds almost done (from id order it took ~1 us per
        event)."""
        assigned = {id(event) for event in pending}
        by_id = sorted(events, key=_EVENT_ID_INT)
        records = (
            [(e.event_id, e.session_id if id(e) in assigned else None) for e in by_id]
            if assigned
            else [(e.event_id, None) for e in by_id]
        )
        try:
            async with conn.transaction():  # a savepoint: a duplicate only undoes the COPY
                await conn.copy_records_to_table(
                    "event_ids", records=records, columns=DEDUP_KEY_COLUMNS
                )
            return list(events)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "event_ids_pkey":
                raise
        rows = await conn.fetch(INSERT_IDS_SQL, *_columns(records, 2))
        new = {row[0].int for row in rows}
        seen = [e for e in events if e.event_id.int not in new]
        rows = await conn.fetch(STORED_SESSIONS_SQL, [e.event_id for e in seen])
        stored = {row[0]: row[1] for row in rows}
        for event in seen:
            if id(event) in assigned:
                event.session_id = stored.get(event.event_id, event.session_id)
        return unique_events([e for e in events if e.event_id.int in new])

    async def _append_deltas(self, conn: Connection, batch: BatchAggregates) -> Written:
        """COPY the batch's timeline rows and its deltas; return the rows that `KnownRows`
        keeps, for after the commit."""
        await conn.copy_records_to_table(
            "visitor_activity", records=batch.activity_records(), columns=ACTIVITY_COLUMNS
        )
        hours, days = batch.visitor_hours(self.known.hours), batch.visitor_days(self.known.days)
        steps = batch.funnel_steps(self.known.steps)
        minutes = batch.visitor_minutes_rows(self.known.minutes)
        deltas: tuple[list[Any], ...] = (
            hours, days, batch.sessions_rows(), batch.customers_rows(), steps,
            batch.products_rows(), batch.unconverted_rows(), minutes, batch.minute_rows(),
        )  # fmt: skip
        for table, records in zip(DELTA_TABLES, deltas, strict=True):
            if records:
                await conn.copy_records_to_table(table, records=records)
        return minutes, hours, days, steps


async def apply_pending(conn: Connection, budget: float = APPLY_BUDGET) -> None:
    """Apply the committed deltas of every batch to the aggregates, and merge the identity
    links pending. Outside any transaction: each round is one of its own.

    One applier at a time: when another session holds the lock, this one returns at once and
    leaves its batch's deltas to it, as that session looks for more after each round's commit
    (a batch commits its deltas before it asks, so one of the two always sees them). After
    `budget` seconds it stops looking when a batch is in flight (holds the writer lock): that
    batch asks after its commit, and its round sees every delta committed before. A batch that
    never commits (its process killed, its retries spent) leaves them to the next batch, or to
    the catch-up of the next process to start (`start_sink`).

    A round reads one snapshot (repeatable read), so it applies whole batches: a batch
    committed while it runs is left whole to the next round, and any delta table tells whether
    one waits. Its merges see the same snapshot: a merge moves a batch's timeline rows (written
    with the batch) only in the round that applies the batch's visitor rows, so it finds them.
    """
    started, rounds = time.monotonic(), 0
    while True:
        rounds += 1
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                async with conn.transaction(isolation="repeatable_read"):
                    if not await conn.fetchval(TRY_LOCK_SQL, APPLIER_LOCK_KEY):
                        return
                    visitors = await _apply_round(conn)
                    # Anonymous ids whose rows this round wrote and that are linked by now (a
                    # link committed after their batch read the links): merged again.
                    await identities.remerge_linked(conn, visitors)
                    await identities.merge_pending(conn)
                break
            except APPLY_CONFLICTS as exc:  # with an identity merge: rolled back whole
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                log.info("applying deltas cancelled (%s, attempt %d)", type(exc).__name__, attempt)
        if not await conn.fetchval(PENDING_DELTAS_SQL):
            return
        elapsed = time.monotonic() - started
        if elapsed > budget and await conn.fetchval(WRITER_IN_FLIGHT_SQL, WRITER_LOCK_KEY):
            log.info(
                "applied deltas for %.1f s in %d rounds; leaving the rest to a batch in flight",
                elapsed, rounds,
            )  # fmt: skip
            return


async def _apply_round(conn: Connection) -> list[str]:
    """Fold and apply every delta committed so far; return the profiles written."""
    await conn.execute(APPLY_VISITORS_SQL)
    created = {row[0]: row[1] for row in await conn.fetch(APPLY_SESSIONS_SQL)}
    rows = await conn.fetch(APPLY_CUSTOMERS_SQL, _encode_json(created).decode())
    await conn.execute(APPLY_COUNTERS_SQL)
    return [row[0] for row in rows]


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
