"""Shared by the processor's tests: build events as clients send them and envelopes as the
gateway publishes them, run `clickstream processor` as a subprocess, wait for rows, and check
every aggregate against a recount of the events sent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from clickstream_contract import envelope
from clickstream_contract.config import Settings

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

BASE_TIME = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def event(
    event_type: str = "page_view",
    *,
    at: datetime | None = None,
    anonymous_id: str | None = "anon-1",
    **fields: Any,
) -> dict[str, Any]:
    """One event as a client sends it (a JSON object)."""
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": (at or BASE_TIME).isoformat(),
    }
    if anonymous_id is not None:
        body["anonymous_id"] = anonymous_id
    if (
        event_type in ("product_view", "add_to_cart", "remove_from_cart")
        and "product" not in fields
    ):
        fields["product"] = {"product_id": "sku-1", "name": "Mug", "price": 9.5}
    if event_type == "purchase" and "order" not in fields:
        fields["order"] = {
            "order_id": f"order-{uuid.uuid4().hex[:8]}",
            "revenue": 19.0,
            "currency": "EUR",
            "items": [{"product_id": "sku-1", "price": 9.5, "quantity": 2}],
        }
    body.update(fields)
    return body


def group(
    events: list[dict[str, Any]],
    *,
    received_at: datetime | None = None,
    source: str = "web",
    reasons: list[str] | None = None,
    user_agent: str | None = WINDOWS_CHROME,
) -> envelope.Group:
    return envelope.Group(
        received_at=received_at or BASE_TIME + timedelta(seconds=1),
        source=source,
        events=[msgspec.json.encode(e) for e in events],
        client_ip="203.0.113.7",
        user_agent=user_agent,
        reasons=reasons or [],
    )


def envelope_of(events: list[dict[str, Any]], kind: envelope.Kind = "events") -> bytes:
    """The Pub/Sub message body the gateway publishes for one request with these events."""
    reasons = (
        [f"$.event_type: bad value {i}" for i in range(len(events))] if kind == "bad" else None
    )
    return envelope.encode(kind, [group(events, reasons=reasons)])


def a_day_of_traffic(visitors: int = 20, seed: int = 7) -> list[dict[str, Any]]:
    """Several visitors browsing, carting and buying, with gaps that split sessions. Every third
    visitor signs in: anonymous at first (most of them), with its user id from a random event
    on, so its anonymous profile is merged into the user's wherever the sign-in lands."""
    import random

    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for v in range(visitors):
        anon = f"anon-{v}"
        count = rng.randrange(3, 12)
        user = f"user-{v}" if v % 3 == 0 else None
        signs_in_at = rng.randrange(count) if user else count
        at = BASE_TIME + timedelta(minutes=rng.randrange(0, 120))
        for index in range(count):
            at += timedelta(minutes=rng.choice([1, 2, 5, 10, 45]))
            kind = rng.choice(
                ["page_view", "page_view", "product_view", "add_to_cart", "begin_checkout",
                 "purchase", "remove_from_cart", "search"]
            )  # fmt: skip
            fields: dict[str, Any] = {
                "page": {
                    "url": f"https://shop.example/p/{rng.randrange(5)}?utm_source=news&utm_medium=email"
                    if rng.random() < 0.2
                    else f"https://shop.example/p/{rng.randrange(5)}",
                    "referrer": rng.choice([None, "https://www.google.com/", "https://t.co/x"]),
                },
                "context": {"user_agent": rng.choice([IPHONE, WINDOWS_CHROME])},
            }
            if index >= signs_in_at:
                fields["user_id"] = user
            if kind in ("product_view", "add_to_cart", "remove_from_cart"):
                fields["product"] = {
                    "product_id": f"sku-{rng.randrange(4)}",
                    "name": "Thing",
                    "price": 5.0,
                }
            if kind == "purchase" and rng.random() < 0.5:  # a product and no order items
                quantity = rng.choice([None, 1, 3])
                fields["product"] = {"product_id": f"sku-{rng.randrange(4)}", "price": 4.25}
                if quantity is not None:
                    fields["product"]["quantity"] = quantity
                fields["order"] = {
                    "order_id": f"order-{v}-{at:%H%M}",
                    "revenue": 12.75,
                    "currency": "EUR",
                }
            events.append(event(kind, at=at, anonymous_id=anon, **fields))
    rng.shuffle(events)
    return events


# The events PostgreSQL keeps (the newest of each visitor, for the dashboard's timeline) as a
# table: `SELECT ... FROM {TIMELINE} WHERE ...`.
TIMELINE = """(SELECT v.visitor_key, e.* FROM visitor_activity v, json_to_recordset(v.events)
    AS e(event_id uuid, event_type text, occurred_at timestamptz, session_id text,
         anonymous_id text, page_path text, page_title text, product_id text, product_name text,
         price float8, quantity int, order_id text, revenue float8)) AS timeline"""


# Each pair: the aggregate as stored, and the same computed from scratch from `sent` (the events
# the test sent that PostgreSQL accepted, see `load_sent`) and, for the per-session counts, from
# `sessions`. Traffic and devices ignore the hour: a session's start moves earlier when an
# earlier event arrives later, its hour bucket does not.
RECOUNTS: dict[str, tuple[str, str]] = {
    "metrics_minute": (
        "SELECT minute, event_type, events, revenue FROM metrics_minute",
        """SELECT date_trunc('minute', occurred_at, 'UTC'), event_type, count(*),
                  coalesce(sum(round(revenue * rate, 2)) FILTER (WHERE event_type = 'purchase'), 0)
           FROM sent GROUP BY 1, 2""",
    ),
    "visitor_minutes": (
        "SELECT minute, visitor_key FROM visitor_minutes",
        "SELECT DISTINCT date_trunc('minute', occurred_at, 'UTC'), visitor_key FROM sent",
    ),
    "visitor_hours": (
        "SELECT hour, visitor_key FROM visitor_hours",
        "SELECT DISTINCT date_trunc('hour', occurred_at, 'UTC'), visitor_key FROM sent",
    ),
    "visitor_days": (
        "SELECT day, visitor_key FROM visitor_days",
        "SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date, visitor_key FROM sent",
    ),
    "sessions": (
        """SELECT session_id, visitor_key, started_at, last_seen_at, events, page_views,
                  purchased, revenue
           FROM sessions""",
        """SELECT session_id, (array_agg(visitor_key ORDER BY occurred_at, event_id))[1],
                  min(occurred_at), max(occurred_at), count(*),
                  count(*) FILTER (WHERE event_type = 'page_view'),
                  bool_or(event_type = 'purchase'),
                  coalesce(sum(round(revenue * rate, 2)) FILTER (WHERE event_type = 'purchase'), 0)
           FROM sent GROUP BY session_id""",
    ),
    "funnel_steps": (
        "SELECT session_id, step, reached_at FROM funnel_steps",
        """SELECT session_id, event_type, min(occurred_at) FROM sent
           WHERE event_type IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase')
           GROUP BY 1, 2""",
    ),
    # Purchases count their order's items, or, without items, the product they carry.
    "product_metrics_hour": (
        "SELECT hour, product_id, views, carts, removals, units, revenue FROM product_metrics_hour",
        """WITH lines AS (
               SELECT date_trunc('hour', occurred_at, 'UTC') AS hour, product_id,
                      (event_type = 'product_view')::int AS views,
                      (event_type = 'add_to_cart')::int AS carts,
                      (event_type = 'remove_from_cart')::int AS removals,
                      CASE WHEN event_type = 'purchase' THEN coalesce(quantity, 1) ELSE 0 END
                          AS units,
                      CASE WHEN event_type = 'purchase'
                           THEN coalesce(round(coalesce(price, 0) * coalesce(quantity, 1) * rate,
                                               2), 0)
                           ELSE 0 END AS revenue
               FROM sent
               WHERE product_id IS NOT NULL
                 AND (event_type IN ('product_view', 'add_to_cart', 'remove_from_cart')
                      OR (event_type = 'purchase' AND order_items IS NULL))
               UNION ALL
               SELECT date_trunc('hour', occurred_at, 'UTC'), item->>'product_id', 0, 0, 0,
                      coalesce((item->>'quantity')::int, 1),
                      coalesce(round((item->>'price')::numeric
                                     * coalesce((item->>'quantity')::int, 1) * rate, 2), 0)
               FROM sent, jsonb_array_elements(order_items) AS item
               WHERE event_type = 'purchase')
           SELECT hour, product_id, sum(views), sum(carts), sum(removals), sum(units),
                  sum(revenue)
           FROM lines GROUP BY 1, 2""",
    ),
    # A profile: its user and anonymous ids (merges included), times, counters and newest order
    # (at the same time, the smallest order id). Its first source and device come from the
    # enrichment of its events, which this does not redo.
    "customers": (
        """SELECT visitor_key, user_id, array_to_string(anonymous_ids, ' '), first_seen_at,
                  last_seen_at, events, sessions, orders, lifetime_value, last_order_id,
                  last_order_at FROM customers""",
        """SELECT e.visitor_key, max(user_id),
                  coalesce(string_agg(DISTINCT anonymous_id, ' ' ORDER BY anonymous_id), ''),
                  min(occurred_at), max(occurred_at), count(*),
                  (SELECT count(*) FROM sessions s WHERE s.visitor_key = e.visitor_key),
                  count(*) FILTER (WHERE event_type = 'purchase'),
                  coalesce(sum(round(revenue * rate, 2)) FILTER (WHERE event_type = 'purchase'), 0),
                  (array_agg(order_id ORDER BY occurred_at DESC, order_id COLLATE "C")
                   FILTER (WHERE event_type = 'purchase'))[1],
                  max(occurred_at) FILTER (WHERE event_type = 'purchase')
           FROM sent e GROUP BY e.visitor_key""",
    ),
    # Orders whose currency had no rate: apart, in their own currency.
    "unconverted_revenue_hour": (
        "SELECT hour, currency, orders, revenue FROM unconverted_revenue_hour",
        """SELECT date_trunc('hour', occurred_at, 'UTC'), currency, count(*), sum(revenue)
           FROM sent WHERE event_type = 'purchase' AND rate IS NULL GROUP BY 1, 2""",
    ),
    "traffic_hour": (
        """SELECT referrer_class, utm_source, utm_medium, sum(sessions) FROM traffic_hour
           GROUP BY 1, 2, 3""",
        """SELECT referrer_class, coalesce(utm_source, ''), coalesce(utm_medium, ''), count(*)
           FROM sessions GROUP BY 1, 2, 3""",
    ),
    "devices_hour": (
        "SELECT device_type, browser, os, sum(sessions) FROM devices_hour GROUP BY 1, 2, 3",
        """SELECT device_type, coalesce(browser, ''), coalesce(os, ''), count(*)
           FROM sessions GROUP BY 1, 2, 3""",
    ),
    # The dashboard's rollups (kept by statement triggers): from the events, not from the
    # tables they roll up, so they are exact too. A funnel step that moved to an earlier hour
    # leaves a zero behind.
    "metrics_hour": (
        "SELECT hour, event_type, events, revenue FROM metrics_hour",
        """SELECT date_trunc('hour', occurred_at, 'UTC'), event_type, count(*),
                  coalesce(sum(round(revenue * rate, 2)) FILTER (WHERE event_type = 'purchase'), 0)
           FROM sent GROUP BY 1, 2""",
    ),
    "funnel_hour": (
        "SELECT hour, step, sessions FROM funnel_hour WHERE sessions <> 0",
        """SELECT date_trunc('hour', reached_at, 'UTC'), event_type, count(*)
           FROM (SELECT session_id, event_type, min(occurred_at) AS reached_at FROM sent
                 WHERE event_type IN ('product_view', 'add_to_cart', 'begin_checkout',
                                      'purchase')
                 GROUP BY 1, 2) steps
           GROUP BY 1, 2""",
    ),
    "product_metrics_day": (
        "SELECT day, product_id, views, carts, removals, units, revenue FROM product_metrics_day",
        """SELECT date_trunc('day', hour, 'UTC'), product_id, sum(views), sum(carts),
                  sum(removals), sum(units), sum(revenue)
           FROM product_metrics_hour GROUP BY 1, 2""",
    ),
}

# Without the events sent (a test that only has the database), what can still be recounted:
# every aggregate against another one it must agree with.
CROSS_CHECKS: dict[str, tuple[str, str]] = {
    **{t: RECOUNTS[t] for t in ("traffic_hour", "devices_hour", "product_metrics_day")},
    "visitor_hours": (
        "SELECT hour, visitor_key FROM visitor_hours",
        "SELECT DISTINCT date_trunc('hour', minute, 'UTC'), visitor_key FROM visitor_minutes",
    ),
    "visitor_days": (
        "SELECT day, visitor_key FROM visitor_days",
        "SELECT DISTINCT (hour AT TIME ZONE 'UTC')::date, visitor_key FROM visitor_hours",
    ),
    "metrics_hour": (
        "SELECT hour, event_type, events, revenue FROM metrics_hour WHERE events <> 0",
        """SELECT date_trunc('hour', minute, 'UTC'), event_type, sum(events), sum(revenue)
           FROM metrics_minute GROUP BY 1, 2""",
    ),
    "funnel_hour": (
        "SELECT hour, step, sessions FROM funnel_hour WHERE sessions <> 0",
        "SELECT date_trunc('hour', reached_at, 'UTC'), step, count(*) FROM funnel_steps"
        " GROUP BY 1, 2",
    ),
    # A session counts for the visitor of its first event, as the profile's session count does
    # (its events and revenue may belong to several visitors: no check there).
    "customers": (
        "SELECT visitor_key, sessions FROM customers WHERE sessions > 0",
        "SELECT visitor_key, count(*) FROM sessions GROUP BY 1",
    ),
    "events": (
        "SELECT coalesce(sum(events), 0) FROM metrics_minute",
        "SELECT count(*) FROM event_ids",
    ),
}

# The columns of `sent`: each event as the sink would see it once accepted.
SENT_COLUMNS = """event_id uuid, event_type text, occurred_at timestamptz, visitor_key text,
    user_id text, anonymous_id text COLLATE "C", order_id text, session_id text, product_id text,
    price numeric(14, 2), quantity int, revenue numeric(14, 2), order_items jsonb, currency text,
    rate numeric"""

# Each event's rate to the reporting currency ($1): 1 in that currency (or none), else the
# newest loaded rate of its UTC day or the 6 days before (processor/currency.py's promise);
# NULL when there is none.
SENT_RATES = """
UPDATE sent SET rate = CASE
    WHEN currency IS NULL OR currency = $1 THEN 1
    ELSE (SELECT r.rate FROM exchange_rates r
          WHERE r.reporting_currency = $1 AND r.currency = sent.currency
            AND r.day BETWEEN (occurred_at AT TIME ZONE 'UTC')::date - 6
                          AND (occurred_at AT TIME ZONE 'UTC')::date
          ORDER BY r.day DESC LIMIT 1) END
"""


async def load_sent(conn: asyncpg.Connection, sent: list[dict[str, Any]]) -> None:
    """The temp table `sent`: the events the test sent (first of each id) that PostgreSQL
    accepted (in `event_ids`), with the session the processor assigned when the client sent
    none, the user of a linked anonymous id as visitor once the link is merged (the identity
    merge's promise; a link recorded by a batch whose deltas wait is merged with them), and the
    rate that converts its amounts to the reporting currency (`SENT_RATES`)."""
    unique = {str(e["event_id"]): e for e in reversed(sent)}
    rows = []
    for event_id, e in unique.items():
        product, order = e.get("product") or {}, e.get("order") or {}
        rows.append((
            event_id, e["event_type"], e["occurred_at"], e.get("user_id"), e.get("anonymous_id"),
            e.get("session_id"), product.get("product_id"), product.get("price"),
            product.get("quantity"), order.get("revenue"),
            json.dumps(order["items"]) if order.get("items") else None,
            order.get("currency") or product.get("currency"), order.get("order_id"),
        ))  # fmt: skip
    await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS sent ({SENT_COLUMNS})")
    await conn.execute("TRUNCATE sent")
    await conn.execute(
        """INSERT INTO sent
           SELECT t.event_id::uuid, t.event_type, t.occurred_at::timestamptz,
                  coalesce(t.user_id, l.user_id, t.anonymous_id),
                  coalesce(t.user_id, l.user_id), t.anonymous_id, t.order_id,
                  coalesce(t.session_id, i.session_id::text), t.product_id,
                  t.price::float8::numeric(14, 2), t.quantity,
                  t.revenue::float8::numeric(14, 2), t.order_items::jsonb, t.currency
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::int[], $10::text[], $11::text[], $12::text[],
                       $13::text[])
                AS t(event_id, event_type, occurred_at, user_id, anonymous_id, session_id,
                     product_id, price, quantity, revenue, order_items, currency, order_id)
           JOIN event_ids i ON i.event_id = t.event_id::uuid
           LEFT JOIN identities l
                  ON t.user_id IS NULL AND l.anonymous_id = t.anonymous_id
                  AND l.merged_at IS NOT NULL""",
        *[
            list(column) if i == 8 else [None if v is None else str(v) for v in column]
            for i, column in enumerate(zip(*rows, strict=True))
        ]
        if rows
        else [[] for _ in range(13)],
    )
    await conn.execute(SENT_RATES, Settings.from_env().reporting_currency)


async def aggregate_mismatches(
    conn: asyncpg.Connection, sent: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """{table: (rows only stored, rows only recounted)} for every aggregate that is off.

    With `sent` (every event the test sent, in any order, duplicates included), each aggregate
    is recounted from those events; without, the aggregates are checked against each other
    (`CROSS_CHECKS`).
    """
    checks = CROSS_CHECKS
    if sent is not None:
        await load_sent(conn, sent)
        checks = RECOUNTS
    problems: dict[str, Any] = {}
    for table, (stored_sql, recount_sql) in checks.items():
        stored = {tuple(row) for row in await conn.fetch(stored_sql)}
        recount = {tuple(row) for row in await conn.fetch(recount_sql)}
        if stored != recount:
            problems[table] = (sorted(stored - recount)[:5], sorted(recount - stored)[:5])
    return problems


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    tables = ["event_ids", "visitor_activity", "sessions", "customers", "bad_events", *RECOUNTS]
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in dict.fromkeys(tables)}


async def fetch_if_migrated(conn: asyncpg.Connection, query: str) -> object:
    try:
        return await conn.fetchval(query)
    except asyncpg.UndefinedTableError:  # the worker has not applied the migrations yet
        return None


# The count of stored events once the aggregates count every one of them: a batch commits its
# event ids, then its deltas are applied in a round of their own (processor.postgres), so a test
# that reads aggregates waits for this rather than for the ids alone.
COUNTED_EVENTS = "SELECT count(*) FROM event_ids WHERE NOT EXISTS (SELECT FROM delta_minutes)"


async def wait_for(database_url: str, query: str, expected: object, within: float = 60) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (value := await fetch_if_migrated(conn, query)) != expected:
            if loop.time() > deadline:
                raise AssertionError(f"{query} = {value}, expected {expected}")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": settings.project,
        "PUBSUB_EMULATOR_HOST": settings.pubsub_emulator_host or "",
        "DATABASE_URL": settings.database_url or "",
        "CLICKSTREAM_BIGQUERY": "off",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "clickstream_contract.cli", "processor",
             "--max-batch-events", "50", "--max-batch-wait-ms", "5"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
