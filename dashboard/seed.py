"""Demo data: sessions and raw events over the last N days, and every aggregate derived from them.

Everything is set-based SQL inside PostgreSQL (generate_series, INSERT ... SELECT), so 5 million
events take minutes, not hours. The events come first; metrics, visitors, products, funnel,
traffic, devices, sessions and customers are then computed from them with the same meaning the
processor gives them, so raw events and aggregates agree (the dashboard's rollup tables follow by
their triggers). The events are drawn into a temporary table, and copied into `events` where the
schema has that table of raw events. Shapes are realistic enough to look at: a daily rhythm, a
long tail of returning visitors, Zipf-like product popularity, a funnel of roughly 3%
conversion, ~0.2% bad events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

# The processor's tables this seeds, plus the dashboard's rollups (kept in step by triggers).
TABLES = (
    "events",
    "event_ids",
    "visitor_activity",
    "metrics_minute",
    "visitor_minutes",
    "visitor_hours",
    "visitor_days",
    "product_metrics_hour",
    "funnel_steps",
    "traffic_hour",
    "devices_hour",
    "sessions",
    "session_state",
    "customers",
    "bad_events",
    "metrics_hour",
    "funnel_hour",
    "product_metrics_day",
)
PRODUCTS = 500
# Whether the processor has counted anything yet (aggregates outlive pruned raw events).
HAS_DATA_SQL = "SELECT EXISTS (SELECT 1 FROM metrics_minute)"
EVENTS_PER_SESSION = 11.5  # mean of the per-session event count drawn below

STEPS: list[tuple[str, str]] = [
    (
        "products",
        """
        CREATE TEMP TABLE seed_products AS
        SELECT i,
               'P' || lpad(i::text, 4, '0') AS product_id,
               (ARRAY['Trail', 'City', 'Classic', 'Pro', 'Eco', 'Nova', 'Alpine', 'Urban'])
                   [1 + i % 8] || ' ' ||
               (ARRAY['Sneaker', 'Jacket', 'Backpack', 'Watch', 'Headphones', 'Lamp', 'Mug',
                      'Tee', 'Bottle', 'Cap'])[1 + (i / 8) % 10] || ' ' || i AS product_name,
               (ARRAY['shoes', 'apparel', 'bags', 'accessories', 'electronics', 'home'])
                   [1 + i % 6] AS category,
               round((5 + 195 * random() ^ 2)::numeric, 2) AS price
        FROM generate_series(0, {products} - 1) i
        """,
    ),
    (
        "sessions (drawn)",
        """
        CREATE TEMP TABLE seed_sessions AS
        WITH drawn AS (
            SELECT s, '{now}'::timestamptz - random() * interval '{days} days' AS started_at,
                   random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                   random() AS r5, random() AS r6, random() AS r7, random() AS r8
            FROM generate_series(1, {candidates}) s
        ), kept AS (
            -- Daily rhythm (quiet at 04:00 UTC, busy at 16:00) and gentle growth over time.
            SELECT * FROM drawn
            WHERE random() < (0.25 + 0.75 * (0.5 - 0.5 * cos(2 * pi() *
                      (extract(hour FROM started_at AT TIME ZONE 'UTC') - 4) / 24)))
                  * (0.85 + 0.15 * extract(epoch FROM started_at - ('{now}'::timestamptz
                      - interval '{days} days')) / ({days} * 86400))
        ), shaped AS (
            SELECT s, started_at, r3, r5, r6, r7,
                   floor(r1 ^ 2 * {visitors})::int AS v,
                   least(60, 1 + floor(-ln(1 - r2) * {mean_minus_one}))::int AS n_events,
                   10 + r3 * 80 AS gap_s,
                   CASE WHEN r4 < 0.0333 THEN 4 WHEN r4 < 0.0605 THEN 3 WHEN r4 < 0.121 THEN 2
                        WHEN r4 < 0.55 THEN 1 ELSE 0 END AS stage,
                   floor(r8 ^ 2.2 * {products})::int AS focus
            FROM kept
        )
        SELECT s, started_at, v, n_events, gap_s, least(stage, n_events - 1) AS stage, focus, r3,
               's-' || s AS session_id,
               'a-' || substr(md5(v::text), 1, 16) AS anonymous_id,
               CASE WHEN v % 5 < 2 THEN 'user' || v || '@example.com' END AS user_id,
               CASE WHEN r5 < 0.45 THEN 'desktop' WHEN r5 < 0.93 THEN 'mobile'
                    ELSE 'tablet' END AS device_type,
               CASE WHEN r5 < 0.45 THEN
                        CASE WHEN r6 < 0.65 THEN 'Chrome' WHEN r6 < 0.8 THEN 'Edge'
                             WHEN r6 < 0.9 THEN 'Safari' ELSE 'Firefox' END
                    WHEN r5 < 0.93 THEN
                        CASE WHEN r6 < 0.55 THEN 'Chrome Mobile' WHEN r6 < 0.9 THEN 'Mobile Safari'
                             ELSE 'Samsung Internet' END
                    ELSE CASE WHEN r6 < 0.6 THEN 'Mobile Safari' ELSE 'Chrome' END END AS browser,
               CASE WHEN r5 < 0.45 THEN
                        CASE WHEN r6 >= 0.8 AND r6 < 0.9 THEN 'Mac OS X'
                             WHEN r3 < 0.75 THEN 'Windows' WHEN r3 < 0.92 THEN 'Mac OS X'
                             ELSE 'Linux' END
                    WHEN r5 < 0.93 THEN CASE WHEN r6 >= 0.55 AND r6 < 0.9 THEN 'iOS'
                                             ELSE 'Android' END
                    ELSE CASE WHEN r6 < 0.6 THEN 'iOS' ELSE 'Android' END END AS os,
               CASE WHEN r7 < 0.33 THEN 'direct' WHEN r7 < 0.63 THEN 'search'
                    WHEN r7 < 0.75 THEN 'social' WHEN r7 < 0.86 THEN 'paid'
                    WHEN r7 < 0.94 THEN 'email' ELSE 'other' END AS referrer_class,
               CASE WHEN r7 >= 0.75 AND r7 < 0.83 THEN 'google'
                    WHEN r7 >= 0.83 AND r7 < 0.86 THEN 'facebook'
                    WHEN r7 >= 0.86 AND r7 < 0.94 THEN 'newsletter'
                    WHEN r7 >= 0.63 AND r7 < 0.69 THEN 'instagram' END AS utm_source,
               CASE WHEN r7 >= 0.75 AND r7 < 0.83 THEN 'cpc'
                    WHEN r7 >= 0.83 AND r7 < 0.86 THEN 'paid_social'
                    WHEN r7 >= 0.86 AND r7 < 0.94 THEN 'email'
                    WHEN r7 >= 0.63 AND r7 < 0.69 THEN 'social' END AS utm_medium,
               CASE WHEN r7 >= 0.63 AND r7 < 0.94 THEN
                    (ARRAY['spring_sale', 'new_arrivals', 'weekly'])[1 + s % 3] END AS utm_campaign,
               CASE WHEN r7 < 0.33 THEN NULL
                    WHEN r7 < 0.63 THEN (ARRAY['https://www.google.com/', 'https://www.bing.com/',
                                               'https://duckduckgo.com/'])[1 + s % 3]
                    WHEN r7 < 0.75 THEN (ARRAY['https://www.instagram.com/',
                                               'https://www.facebook.com/',
                                               'https://t.co/x'])[1 + s % 3]
                    WHEN r7 < 0.86 THEN 'https://www.google.com/aclk'
                    WHEN r7 < 0.94 THEN 'https://mail.example.net/'
                    ELSE 'https://blog.example.org/gift-ideas' END AS referrer
        FROM shaped
        """,
    ),
    (
        "sessions (cut to the event budget)",
        """
        CREATE TEMP TABLE seed_cut AS
        SELECT * FROM (SELECT *, sum(n_events) OVER (ORDER BY s) AS cum FROM seed_sessions) x
        WHERE cum - n_events < {events}
        """,
    ),
    (
        "events",
        """
        CREATE TEMP TABLE seed_events (
            event_id uuid, event_type text, occurred_at timestamptz, received_at timestamptz,
            source text, visitor_key text, anonymous_id text, user_id text, session_id text,
            page_url text, page_path text, page_title text, referrer text, referrer_class text,
            utm_source text, utm_medium text, utm_campaign text, user_agent text,
            device_type text, browser text, os text, is_bot boolean, client_ip text, locale text,
            product_id text, product_name text, category text, price numeric(14, 2),
            quantity integer, currency text, order_id text, revenue numeric(14, 2),
            order_items jsonb);
        INSERT INTO seed_events
        SELECT gen_random_uuid(), e.event_type, e.occurred_at,
               e.occurred_at + interval '120 milliseconds', 'web',
               coalesce(c.user_id, c.anonymous_id), c.anonymous_id, c.user_id, c.session_id,
               'https://shop.example.com' || e.path, e.path,
               CASE WHEN p.product_id IS NOT NULL THEN p.product_name ELSE 'Example shop' END,
               CASE WHEN e.i = 1 THEN c.referrer ELSE 'https://shop.example.com/' END,
               c.referrer_class, c.utm_source, c.utm_medium, c.utm_campaign,
               'Mozilla/5.0 (seeded) ' || c.browser, c.device_type, c.browser, c.os, false,
               '203.0.113.' || (c.v % 250), 'en-US',
               p.product_id, p.product_name, p.category, p.price, e.quantity,
               CASE WHEN p.product_id IS NOT NULL THEN 'USD' END,
               CASE WHEN e.event_type = 'purchase' THEN 'o-' || c.s END,
               CASE WHEN e.event_type = 'purchase' THEN p.price * e.quantity END,
               CASE WHEN e.event_type = 'purchase' THEN jsonb_build_array(jsonb_build_object(
                   'product_id', p.product_id, 'price', p.price, 'quantity', e.quantity)) END
        FROM seed_cut c
        CROSS JOIN LATERAL (
            SELECT i, t.event_type,
                   c.started_at + (i - 1) * c.gap_s * interval '1 second' AS occurred_at,
                   CASE WHEN t.event_type IN ('product_view', 'add_to_cart', 'remove_from_cart',
                                              'begin_checkout', 'purchase')
                        THEN CASE WHEN t.event_type = 'product_view' AND i > 2
                                  THEN floor(random() ^ 2.2 * {products})::int
                                  ELSE c.focus END END AS product,
                   CASE WHEN t.event_type IN ('add_to_cart', 'purchase')
                        THEN 1 + floor(c.r3 * 3)::int % 3 END AS quantity,
                   CASE t.event_type
                        WHEN 'begin_checkout' THEN '/checkout'
                        WHEN 'purchase' THEN '/checkout/complete'
                        WHEN 'search' THEN '/search?q=' || (ARRAY['shoes', 'jacket', 'gift',
                                                                  'sale'])[1 + i % 4]
                        ELSE (ARRAY['/', '/category/shoes', '/category/apparel', '/sale',
                                    '/blog/style-guide'])[1 + (i + c.s) % 5] END AS path
            FROM generate_series(1, least(c.n_events, {events} - (c.cum - c.n_events))) i
            CROSS JOIN LATERAL (
                SELECT CASE
                    WHEN c.stage >= 4 AND i = c.n_events THEN 'purchase'
                    WHEN c.stage >= 3 AND i = c.n_events - (c.stage >= 4)::int
                        THEN 'begin_checkout'
                    WHEN c.stage >= 2
                         AND i = c.n_events - (c.stage >= 4)::int - (c.stage >= 3)::int
                        THEN 'add_to_cart'
                    WHEN i = 1 THEN 'page_view'
                    WHEN c.stage >= 1 AND i = 2 THEN 'product_view'
                    ELSE (SELECT CASE WHEN r < 0.45 THEN 'page_view'
                                      WHEN r < 0.85 THEN 'product_view'
                                      WHEN r < 0.97 OR c.stage < 2 THEN 'search'
                                      ELSE 'remove_from_cart' END
                          FROM (SELECT random() + i * 0 AS r) rr)
                    END AS event_type
            ) t
        ) e
        LEFT JOIN seed_products p ON p.i = e.product
        WHERE e.occurred_at < '{now}'::timestamptz
        """,
    ),
    (
        "raw events",
        # Only where PostgreSQL keeps raw events (the `events` table, when it exists).
        """
        INSERT INTO events (
            event_id, event_type, occurred_at, received_at, source, visitor_key, anonymous_id,
            user_id, session_id, page_url, page_path, page_title, referrer, referrer_class,
            utm_source, utm_medium, utm_campaign, user_agent, device_type, browser, os, is_bot,
            client_ip, locale, product_id, product_name, category, price, quantity, currency,
            order_id, revenue, order_items)
        SELECT * FROM seed_events
        ORDER BY occurred_at  -- the arrival order: BRIN indexes rely on it
        """,
    ),
    (
        "timeline",
        # What the processor keeps instead (migration 201): the dedup keys, and one activity row
        # per visitor with its newest 50 events (the customer timeline) and where it was active.
        """
        INSERT INTO event_ids (event_id, received_at) SELECT event_id, received_at FROM seed_events;
        INSERT INTO visitor_activity (visitor_key, received_at, last_at, minutes, events)
        SELECT e.visitor_key, max(e.received_at), max(e.occurred_at), b.minutes,
               json_agg(json_build_object(
                   'event_id', e.event_id, 'event_type', e.event_type,
                   'occurred_at', e.occurred_at, 'session_id', e.session_id,
                   'anonymous_id', e.anonymous_id, 'page_path', e.page_path,
                   'page_title', e.page_title, 'product_id', e.product_id,
                   'product_name', e.product_name, 'price', e.price, 'quantity', e.quantity,
                   'order_id', e.order_id, 'revenue', e.revenue, 'currency', e.currency)
                   ORDER BY e.occurred_at DESC) FILTER (WHERE e.n <= 50)
        FROM (SELECT *, row_number() OVER (PARTITION BY visitor_key
                                           ORDER BY occurred_at DESC) AS n
              FROM seed_events) e
        JOIN (SELECT visitor_key, array_agg(DISTINCT date_trunc('minute', occurred_at, 'UTC')
                                            ORDER BY date_trunc('minute', occurred_at, 'UTC'))
                                  AS minutes
              FROM seed_events GROUP BY visitor_key) b USING (visitor_key)
        GROUP BY e.visitor_key, b.minutes
        """,
    ),
    (
        "metrics_minute",
        """
        INSERT INTO metrics_minute (minute, event_type, events, revenue)
        SELECT date_trunc('minute', occurred_at), event_type, count(*), coalesce(sum(revenue), 0)
        FROM seed_events GROUP BY 1, 2
        """,
    ),
    (
        "visitor_minutes",
        """
        INSERT INTO visitor_minutes (minute, visitor_key)
        SELECT DISTINCT date_trunc('minute', occurred_at), visitor_key FROM seed_events
        """,
    ),
    (
        "visitor_hours",
        """
        INSERT INTO visitor_hours (hour, visitor_key)
        SELECT DISTINCT date_trunc('hour', occurred_at, 'UTC'), visitor_key FROM seed_events
        """,
    ),
    (
        "visitor_days",
        """
        INSERT INTO visitor_days (day, visitor_key)
        SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date, visitor_key FROM seed_events
        """,
    ),
    (
        "product_metrics_hour",
        """
        INSERT INTO product_metrics_hour
            (hour, product_id, product_name, category, views, carts, removals, units, revenue)
        SELECT date_trunc('hour', occurred_at, 'UTC'), product_id, max(product_name),
               max(category),
               count(*) FILTER (WHERE event_type = 'product_view'),
               count(*) FILTER (WHERE event_type = 'add_to_cart'),
               count(*) FILTER (WHERE event_type = 'remove_from_cart'),
               coalesce(sum(quantity) FILTER (WHERE event_type = 'purchase'), 0),
               coalesce(sum(revenue) FILTER (WHERE event_type = 'purchase'), 0)
        FROM seed_events WHERE product_id IS NOT NULL GROUP BY 1, 2
        """,
    ),
    (
        "funnel_steps",
        """
        INSERT INTO funnel_steps (session_id, step, reached_at)
        SELECT session_id, event_type, min(occurred_at) FROM seed_events
        WHERE event_type IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase')
        GROUP BY 1, 2 ORDER BY 3
        """,
    ),
    (
        "sessions",
        """
        INSERT INTO sessions (
            session_id, visitor_key, anonymous_id, user_id, started_at, last_seen_at, events,
            page_views, landing_url, referrer_class, utm_source, utm_medium, utm_campaign,
            device_type, browser, os, purchased, revenue)
        SELECT c.session_id, coalesce(c.user_id, c.anonymous_id), c.anonymous_id, c.user_id,
               e.started_at, e.last_seen_at, e.events, e.page_views, e.landing_url,
               c.referrer_class, c.utm_source, c.utm_medium, c.utm_campaign, c.device_type,
               c.browser, c.os, e.purchased, e.revenue
        FROM (
            SELECT session_id, min(occurred_at) AS started_at, max(occurred_at) AS last_seen_at,
                   count(*) AS events,
                   count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
                   (array_agg(page_url ORDER BY occurred_at))[1] AS landing_url,
                   bool_or(event_type = 'purchase') AS purchased,
                   coalesce(sum(revenue), 0) AS revenue
            FROM seed_events GROUP BY session_id
        ) e JOIN seed_cut c USING (session_id)
        ORDER BY e.started_at
        """,
    ),
    (
        "traffic_hour",
        """
        INSERT INTO traffic_hour (hour, referrer_class, utm_source, utm_medium, sessions)
        SELECT date_trunc('hour', started_at, 'UTC'), referrer_class, coalesce(utm_source, ''),
               coalesce(utm_medium, ''), count(*)
        FROM sessions GROUP BY 1, 2, 3, 4
        """,
    ),
    (
        "devices_hour",
        """
        INSERT INTO devices_hour (hour, device_type, browser, os, sessions)
        SELECT date_trunc('hour', started_at, 'UTC'), device_type, coalesce(browser, ''),
               coalesce(os, ''), count(*)
        FROM sessions GROUP BY 1, 2, 3, 4
        """,
    ),
    (
        "customers",
        """
        INSERT INTO customers (
            visitor_key, user_id, anonymous_ids, first_seen_at, last_seen_at, events, sessions,
            orders, lifetime_value, last_order_id, last_order_at, first_source, device_type)
        SELECT visitor_key, max(user_id), array_agg(DISTINCT anonymous_id), min(started_at),
               max(last_seen_at), sum(events), count(*), count(*) FILTER (WHERE purchased),
               sum(revenue),
               'o-' || substr(max(session_id) FILTER (WHERE purchased), 3),
               max(last_seen_at) FILTER (WHERE purchased),
               (array_agg(coalesce(utm_source, referrer_class) ORDER BY started_at))[1],
               (array_agg(device_type ORDER BY started_at))[1]
        FROM sessions GROUP BY visitor_key
        """,
    ),
    (
        "bad_events",
        """
        INSERT INTO bad_events (received_at, source, reason, reason_class, raw, client_ip,
                                user_agent, message_key)
        SELECT '{now}'::timestamptz - random() * interval '{days} days', 'web',
               (ARRAY['$.events[0].occurred_at: expected RFC 3339 datetime',
                      '$.events[0].event_type: must match ^[a-z][a-z0-9_]{{0,63}}$',
                      '$.events[0]: anonymous_id or user_id is required',
                      'envelope: not a msgpack map',
                      'processing: order.revenue is negative'])[1 + b % 5],
               (ARRAY['validation', 'validation', 'validation', 'envelope', 'processing'])
                   [1 + b % 5],
               convert_to((ARRAY[
                   '{{"event_type":"page_view","occurred_at":"yesterday"}}',
                   '{{"event_type":"<script>alert(1)</script>","anonymous_id":"a-1"}}',
                   '{{"event_type":"page_view","occurred_at":"2024-05-01T12:00:00Z"}}',
                   'not msgpack',
                   '{{"event_type":"purchase","order":{{"revenue":-5}}}}'])[1 + b % 5], 'UTF8'),
               '198.51.100.' || (b % 250), 'Mozilla/5.0 (seeded)', 'seed-' || b
        FROM generate_series(1, greatest(1, {events} / 500)) b ORDER BY 1
        """,
    ),
]


async def seed_database(
    database_url: str,
    *,
    events: int = 5_000_000,
    days: int = 30,
    reset: bool = False,
    random_seed: float = 0.42,
    now: datetime | None = None,
    progress: Callable[[str], None] = lambda text: None,
) -> str:
    """Seed `events` raw events over the last `days` days and derive the aggregates."""
    from clickstream_contract.config import connect_options

    now = (now or datetime.now(UTC)).astimezone(UTC)
    sessions = max(1, int(events / EVENTS_PER_SESSION * 1.05))
    values = {
        "now": now.isoformat(),
        "days": days,
        "events": events,
        "products": PRODUCTS,
        # About half of the drawn sessions survive the daily-rhythm filter.
        "candidates": sessions * 2 + 100,
        "visitors": max(1, int(sessions / 1.7)),
        "mean_minus_one": EVENTS_PER_SESSION - 1,
    }
    conn = await asyncpg.connect(**connect_options(database_url))
    try:
        await conn.execute(
            "SET synchronous_commit = off; SET work_mem = '256MB';"
            " SET max_parallel_workers_per_gather = 0"
        )
        tables = [t for t in TABLES if await conn.fetchval("SELECT to_regclass($1)", t)]
        if reset:
            await conn.execute(f"TRUNCATE {', '.join(tables)}")
        elif await conn.fetchval(HAS_DATA_SQL):
            raise SystemExit("the database already has events: pass --reset to replace them")
        await conn.fetchval("SELECT setseed($1)", random_seed)
        started = time.monotonic()
        async with conn.transaction():
            for name, sql in STEPS:
                if name == "raw events" and "events" not in tables:
                    continue
                if name == "timeline" and "visitor_activity" not in tables:
                    continue
                step_started = time.monotonic()
                await conn.execute(sql.format(**values))
                progress(f"seeded {name} in {time.monotonic() - step_started:.1f}s")
        # The rollup triggers updated the same rows many times over: reclaim that before use.
        await conn.execute(f"VACUUM ANALYZE {', '.join(tables)}")
        count = await conn.fetchval("SELECT count(*) FROM seed_events")
        n_sessions = await conn.fetchval("SELECT count(*) FROM sessions")
    finally:
        await conn.close()
    elapsed = timedelta(seconds=round(time.monotonic() - started))
    return f"seeded {count} events in {n_sessions} sessions over {days} days in {elapsed}"
