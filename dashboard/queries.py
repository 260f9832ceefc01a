"""The dashboard's reads: one function per JSON endpoint, each returning JSON-ready data.

Charts read only aggregates. A range is split (ranges.cover) into whole days, whole hours and
the leftover minutes, and each piece is read from the coarsest table that is exact for it:
metrics_hour / metrics_minute, visitor_days / visitor_hours / visitor_minutes, funnel_hour /
funnel_steps, traffic_hour and devices_hour / sessions (sessions started in the leftover minutes).
Products exist per hour only, so product boards widen the range to whole hours.
One customer's timeline comes from its newest `visitor_activity` rows (by index, at most 50).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from dashboard.listing import CustomerQuery, encode_cursor
from dashboard.ranges import DAY, EPOCH, HOUR, MINUTE, Piece, TimeRange, ceil, cover, floor

FUNNEL_STEPS = ("product_view", "add_to_cart", "begin_checkout", "purchase")
TOP_EVENT_TYPES = 8
ACTIVE_WINDOWS = {"last_5m": timedelta(minutes=5), "last_30m": timedelta(minutes=30)}

# One source per piece size: (table, time column, value converter for the bounds).
Source = tuple[str, str, Callable[[datetime], object]]


def _same(moment: datetime) -> object:
    return moment


def _day(moment: datetime) -> object:
    return moment.date()


def union_sql(
    pieces: Sequence[Piece],
    sources: dict[timedelta, Source],
    select: str,
    params: list[object],
    tail: str = "",
) -> str:
    """`SELECT <select> FROM <table> WHERE t in piece <tail>` for each piece, UNION ALL'ed.

    `{t}` in `select` stands for the piece's time column. Bounds are appended to `params`.
    """
    parts = []
    for unit, start, end in pieces:
        table, column, convert = sources[unit]
        params.extend([convert(start), convert(end)])
        n = len(params)
        parts.append(
            f"SELECT {select.format(t=column)} FROM {table}"
            f" WHERE {column} >= ${n - 1} AND {column} < ${n} {tail}"
        )
    return " UNION ALL ".join(parts)


METRICS: dict[timedelta, Source] = {
    HOUR: ("metrics_hour", "hour", _same),
    MINUTE: ("metrics_minute", "minute", _same),
}
VISITORS: dict[timedelta, Source] = {
    DAY: ("visitor_days", "day", _day),
    HOUR: ("visitor_hours", "hour", _same),
    MINUTE: ("visitor_minutes", "minute", _same),
}
PRODUCTS: dict[timedelta, Source] = {
    DAY: ("product_metrics_day", "day", _same),
    HOUR: ("product_metrics_hour", "hour", _same),
}


def number(value: object) -> float | int:
    if value is None:
        return 0
    if isinstance(value, Decimal):
        return float(value)
    assert isinstance(value, int | float)
    return value


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def iso(moment: datetime | date | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def describe_range(r: TimeRange) -> dict[str, Any]:
    return {
        "name": r.name,
        "from": iso(r.start),
        "to": iso(r.end),
        "until": iso(r.until),
        "bucket_seconds": int(r.bucket.total_seconds()),
    }


# --- KPIs -----------------------------------------------------------------------------------


def _sum_sql(
    pieces: Sequence[Piece],
    params: list[object],
    hourly: tuple[str, str, str],
    minutely: tuple[str, str, str],
    condition: str = "",
) -> str:
    """An hourly rollup summed over whole hours plus source rows counted in the other minutes.

    Each source is (table, time column, aggregate expression).
    """
    parts = []
    for unit, start, end in pieces:
        table, column, value = hourly if unit == HOUR else minutely
        params.extend([start, end])
        n = len(params)
        parts.append(
            f"SELECT {value} AS n FROM {table}"
            f" WHERE {column} >= ${n - 1} AND {column} < ${n} {condition}"
        )
    return f"SELECT coalesce(sum(n), 0) FROM ({' UNION ALL '.join(parts)}) c"


async def _period_totals(pool: asyncpg.Pool, r: TimeRange) -> dict[str, float | int]:
    """Events, orders, revenue, sessions started and sessions with a purchase in the range."""
    pieces = cover(r.start, r.end, (HOUR, MINUTE))
    params: list[object] = []
    metrics = union_sql(pieces, METRICS, "event_type, events, revenue", params)
    sessions = _sum_sql(
        pieces,
        params,
        ("traffic_hour", "hour", "sum(sessions)"),
        ("sessions", "started_at", "count(*)"),
    )
    purchased = _sum_sql(
        pieces,
        params,
        ("funnel_hour", "hour", "sum(sessions)"),
        ("funnel_steps", "reached_at", "count(*)"),
        "AND step = 'purchase'",
    )
    row = await pool.fetchrow(
        f"""
        SELECT coalesce(sum(events), 0) AS events,
               coalesce(sum(events) FILTER (WHERE event_type = 'purchase'), 0) AS orders,
               coalesce(sum(revenue), 0) AS revenue,
               ({sessions}) AS sessions,
               ({purchased}) AS purchased
        FROM ({metrics}) m
        """,
        *params,
    )
    assert row is not None
    return {key: number(value) for key, value in row.items()}


# Over ranges longer than EXACT_VISITORS_SPAN, distinct visitors are estimated from the visitors
# whose key hashes into one of SAMPLE_RATE buckets (migration 101 indexes exactly that sample):
# ~1/16 of the rows, a relative error of about 4/sqrt(visitors). Where the estimate is small,
# the exact count is cheap and an estimate would be visibly off, so it is counted exactly.
EXACT_VISITORS_SPAN = timedelta(hours=12)
EXACT_VISITORS_BELOW = 50_000
SAMPLE_RATE = 16
SAMPLE = "AND (hashtext(visitor_key) & 15) = 0"


async def count_visitors(pool: asyncpg.Pool, r: TimeRange, sample: str) -> int:
    params: list[object] = []
    pieces = cover(r.start, r.end, (DAY, HOUR, MINUTE))
    union = union_sql(pieces, VISITORS, "visitor_key", params, sample)
    count = await pool.fetchval(
        f"SELECT count(*) FROM (SELECT visitor_key FROM ({union}) u GROUP BY visitor_key) v",
        *params,
    )
    return int(count)


async def unique_visitors(pool: asyncpg.Pool, r: TimeRange) -> tuple[int, bool]:
    """Distinct visitors over the day/hour/minute pieces, and whether it is an estimate."""
    if r.span > EXACT_VISITORS_SPAN:
        estimate = await count_visitors(pool, r, SAMPLE) * SAMPLE_RATE
        if estimate >= EXACT_VISITORS_BELOW:
            return estimate, True
    return await count_visitors(pool, r, ""), False


async def active_sessions(pool: asyncpg.Pool, now: datetime) -> dict[str, int]:
    """Sessions with an event in the last 5 and 30 minutes (sessions.last_seen_at)."""
    row = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE last_seen_at >= $1) AS last_5m, count(*) AS last_30m"
        " FROM sessions WHERE last_seen_at >= $2",
        now - ACTIVE_WINDOWS["last_5m"],
        now - ACTIVE_WINDOWS["last_30m"],
    )
    assert row is not None
    return {"last_5m": int(row["last_5m"]), "last_30m": int(row["last_30m"])}


def _kpi_values(
    totals: dict[str, float | int], visitors: int, unconverted: list[dict[str, Any]]
) -> dict[str, float | int | None]:
    """The KPI values of one period (counts as int, money rounded to cents). The average order
    value leaves out the orders whose amount is not in revenue (no exchange rate)."""
    revenue = round(float(totals["revenue"]), 2)
    converted_orders = totals["orders"] - sum(row["orders"] for row in unconverted)
    aov = ratio(revenue, max(converted_orders, 0))
    return {
        "events": int(totals["events"]),
        "unique_visitors": visitors,
        "sessions": int(totals["sessions"]),
        "orders": int(totals["orders"]),
        "revenue": revenue,
        "conversion_rate": ratio(totals["purchased"], totals["sessions"]),
        "average_order_value": round(aov, 2) if aov is not None else None,
    }


def _change(value: float | int | None, previous: float | int | None) -> float | None:
    if value is None or not previous:
        return None
    return (value - previous) / previous


async def kpis(pool: asyncpg.Pool, r: TimeRange, now: datetime) -> dict[str, Any]:
    """KPIs of the range and of the period just before it, with the relative change."""
    (
        current, previous, visitors, previous_visitors, unconverted, previous_unconverted,
        active, has_data,
    ) = await asyncio.gather(
        _period_totals(pool, r),
        _period_totals(pool, r.previous),
        unique_visitors(pool, r),
        unique_visitors(pool, r.previous),
        unconverted_revenue(pool, r),
        unconverted_revenue(pool, r.previous),
        active_sessions(pool, now),
        pool.fetchval("SELECT EXISTS (SELECT 1 FROM metrics_hour)"),
    )  # fmt: skip
    values = _kpi_values(current, visitors[0], unconverted)
    before = _kpi_values(previous, previous_visitors[0], previous_unconverted)
    result: dict[str, Any] = {
        "range": describe_range(r),
        "has_data": bool(has_data),
        "active_sessions": active,
        "kpis": {
            name: {"value": value, "previous": before[name], "change": _change(value, before[name])}
            for name, value in values.items()
        },
    }
    result["kpis"]["unique_visitors"]["approximate"] = visitors[1]
    result["unconverted"] = unconverted
    return result


async def unconverted_revenue(pool: asyncpg.Pool, r: TimeRange) -> list[dict[str, Any]]:
    """Orders whose currency had no exchange rate, per currency, over the whole hours
    overlapping the range: left out of revenue, shown in their own currency."""
    rows = await pool.fetch(
        "SELECT currency, sum(orders) AS orders, sum(revenue) AS revenue"
        " FROM unconverted_revenue_hour WHERE hour >= $1 AND hour < $2"
        " GROUP BY currency ORDER BY currency",
        floor(r.start, HOUR),
        ceil(r.end, HOUR),
    )
    return [
        {"currency": row["currency"], "orders": int(row["orders"]),
         "revenue": float(row["revenue"])}
        for row in rows
    ]  # fmt: skip


# --- charts ---------------------------------------------------------------------------------


async def timeseries(pool: asyncpg.Pool, r: TimeRange) -> dict[str, Any]:
    """Events per bucket by event type (the busiest types; the rest as "other") and revenue."""
    units = (MINUTE,) if r.bucket < HOUR else (HOUR, MINUTE)
    params: list[object] = [r.bucket, EPOCH]
    union = union_sql(
        cover(r.start, r.end, units), METRICS, "{t} AS t, event_type, events, revenue", params
    )
    rows = await pool.fetch(
        f"SELECT date_bin($1, t, $2) AS bucket, event_type, sum(events) AS events,"
        f" sum(revenue) AS revenue FROM ({union}) m GROUP BY 1, 2",
        *params,
    )
    buckets = r.buckets()
    index = {moment: i for i, moment in enumerate(buckets)}
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["event_type"]] = totals.get(row["event_type"], 0) + int(row["events"])
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    top = set(ranked[:TOP_EVENT_TYPES])
    names = ranked[:TOP_EVENT_TYPES] + (["other"] if len(ranked) > TOP_EVENT_TYPES else [])
    series = {name: [0] * len(buckets) for name in names}
    revenue = [0.0] * len(buckets)
    for row in rows:
        i = index[row["bucket"]]
        series[row["event_type"] if row["event_type"] in top else "other"][i] += int(row["events"])
        revenue[i] += float(row["revenue"])
    return {
        "range": describe_range(r),
        "buckets": [iso(moment) for moment in buckets],
        "events": series,
        "revenue": [round(value, 2) for value in revenue],
    }


async def funnel(pool: asyncpg.Pool, r: TimeRange) -> dict[str, Any]:
    """Sessions that first reached each checkout step in the range, with the drop-off."""
    params: list[object] = []
    pieces = cover(r.start, r.end, (HOUR, MINUTE))
    parts = []
    for unit, start, end in pieces:
        table, column, value = (
            ("funnel_hour", "hour", "sessions")
            if unit == HOUR
            else ("funnel_steps", "reached_at", "1")
        )
        params.extend([start, end])
        n = len(params)
        parts.append(
            f"SELECT step, {value} AS n FROM {table} WHERE {column} >= ${n - 1} AND {column} < ${n}"
        )
    rows = await pool.fetch(
        f"SELECT step, sum(n) AS sessions FROM ({' UNION ALL '.join(parts)}) f GROUP BY step",
        *params,
    )
    counts = {row["step"]: int(row["sessions"]) for row in rows}
    steps = []
    for i, step in enumerate(FUNNEL_STEPS):
        sessions = counts.get(step, 0)
        before = counts.get(FUNNEL_STEPS[i - 1], 0) if i else None
        rate = ratio(sessions, before) if before is not None else None
        steps.append(
            {
                "step": step,
                "sessions": sessions,
                "rate_from_previous": rate,
                "drop_off": 1 - rate if rate is not None else None,
            }
        )
    first = counts.get(FUNNEL_STEPS[0], 0)
    return {
        "range": describe_range(r),
        "steps": steps,
        "overall_rate": ratio(counts.get(FUNNEL_STEPS[-1], 0), first),
    }


async def products(pool: asyncpg.Pool, r: TimeRange, limit: int = 10) -> dict[str, Any]:
    """Top products by views, carts and revenue over the whole hours overlapping the range."""
    start, end = floor(r.start, HOUR), ceil(r.end, HOUR)
    params: list[object] = [limit]
    union = union_sql(
        cover(start, end, (DAY, HOUR)),
        PRODUCTS,
        "product_id, product_name, category, views, carts, units, revenue",
        params,
    )
    rows = await pool.fetch(
        f"""
        WITH p AS (
            SELECT product_id, max(product_name) AS product_name, max(category) AS category,
                   sum(views) AS views, sum(carts) AS carts, sum(units) AS units,
                   sum(revenue) AS revenue
            FROM ({union}) x GROUP BY product_id
        )
        (SELECT 'views' AS board, * FROM p WHERE views > 0
            ORDER BY views DESC, product_id LIMIT $1)
        UNION ALL
        (SELECT 'carts', * FROM p WHERE carts > 0 ORDER BY carts DESC, product_id LIMIT $1)
        UNION ALL
        (SELECT 'revenue', * FROM p WHERE revenue > 0 ORDER BY revenue DESC, product_id LIMIT $1)
        """,
        *params,
    )
    boards: dict[str, list[dict[str, Any]]] = {"views": [], "carts": [], "revenue": []}
    for row in rows:
        boards[row["board"]].append(
            {
                "product_id": row["product_id"],
                "product_name": row["product_name"],
                "category": row["category"],
                "views": int(row["views"]),
                "carts": int(row["carts"]),
                "units": int(row["units"]),
                "revenue": float(row["revenue"]),
            }
        )
    return {
        "range": describe_range(r),
        "hours": {"from": iso(start), "to": iso(end)},
        "top": boards,
    }


async def _session_breakdown(
    pool: asyncpg.Pool, r: TimeRange, table: str, columns: Sequence[str]
) -> list[asyncpg.Record]:
    """Sessions started in the range grouped by `columns`: an hourly rollup for whole hours,
    the sessions table for the leftover minutes."""
    params: list[object] = []
    parts = []
    keys = ", ".join(f"coalesce({c}, '') AS {c}" for c in columns)
    for unit, start, end in cover(r.start, r.end, (HOUR, MINUTE)):
        params.extend([start, end])
        n = len(params)
        if unit == HOUR:
            parts.append(
                f"SELECT {keys}, sessions AS n FROM {table} WHERE hour >= ${n - 1} AND hour < ${n}"
            )
        else:
            parts.append(
                f"SELECT {keys}, 1 AS n FROM sessions"
                f" WHERE started_at >= ${n - 1} AND started_at < ${n}"
            )
    group = ", ".join(columns)
    return await pool.fetch(
        f"SELECT {group}, sum(n) AS sessions FROM ({' UNION ALL '.join(parts)}) s"
        f" GROUP BY {group} ORDER BY sessions DESC, {group}",
        *params,
    )


def _totals_by(rows: Sequence[asyncpg.Record], key: str) -> list[dict[str, Any]]:
    totals: dict[str, int] = {}
    for row in rows:
        totals[row[key]] = totals.get(row[key], 0) + int(row["sessions"])
    return [
        {"name": name or "(none)", "sessions": n}
        for name, n in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    ]


async def traffic(pool: asyncpg.Pool, r: TimeRange, limit: int = 15) -> dict[str, Any]:
    """Sessions started by referrer class and by utm source / medium."""
    rows = await _session_breakdown(
        pool, r, "traffic_hour", ("referrer_class", "utm_source", "utm_medium")
    )
    return {
        "range": describe_range(r),
        "referrer_classes": _totals_by(rows, "referrer_class"),
        "sources": [
            {
                "referrer_class": row["referrer_class"],
                "utm_source": row["utm_source"],
                "utm_medium": row["utm_medium"],
                "sessions": int(row["sessions"]),
            }
            for row in rows[:limit]
        ],
        "sessions": sum(int(row["sessions"]) for row in rows),
    }


async def devices(pool: asyncpg.Pool, r: TimeRange) -> dict[str, Any]:
    """Sessions started by device type, browser and operating system."""
    rows = await _session_breakdown(pool, r, "devices_hour", ("device_type", "browser", "os"))
    return {
        "range": describe_range(r),
        "device_types": _totals_by(rows, "device_type"),
        "browsers": _totals_by(rows, "browser"),
        "operating_systems": _totals_by(rows, "os"),
        "sessions": sum(int(row["sessions"]) for row in rows),
    }


# --- bad events -----------------------------------------------------------------------------

RAW_PREVIEW_BYTES = 4096
SAMPLES_PER_PAGE = 20
TOP_REASONS = 50


class BadEventsQuery(NamedTuple):
    """Which samples the bad-events page shows: a reason class and/or one exact reason, and the
    page of them (1 is the newest)."""

    reason_class: str | None = None
    reason: str | None = None
    page: int = 1


def parse_bad_events_query(params: Mapping[str, str]) -> BadEventsQuery:
    """`?reason=CLASS&reason_text=TEXT&page=N`; a page that is not a whole number from 1 is a
    ValueError naming the parameter."""
    page_text = params.get("page") or "1"
    if not page_text.isdigit() or int(page_text) < 1:
        raise ValueError(f"page: {page_text!r} is not a whole number from 1")
    return BadEventsQuery(
        params.get("reason") or None, params.get("reason_text") or None, int(page_text)
    )


async def bad_events(pool: asyncpg.Pool, r: TimeRange, q: BadEventsQuery) -> dict[str, Any]:
    """Bad events per bucket by reason class; per reason, how many were replayed (sent back by
    `clickstream replay bad-events`) and how many are still bad; and one page of the newest
    samples, filtered by reason class and/or reason, with their raw payload."""
    matching = (
        "received_at >= $1 AND received_at < $2 AND ($3::text IS NULL OR reason_class = $3)"
        " AND ($4::text IS NULL OR reason = $4)"
    )
    filters = (r.start, r.end, q.reason_class, q.reason)
    counts, reasons, found = await asyncio.gather(
        pool.fetch(
            "SELECT date_bin($1, received_at, $2) AS bucket, reason_class, count(*) AS n"
            " FROM bad_events WHERE received_at >= $3 AND received_at < $4 GROUP BY 1, 2",
            r.bucket,
            EPOCH,
            r.start,
            r.end,
        ),
        pool.fetch(
            "SELECT reason_class, reason, count(*) FILTER (WHERE replayed_at IS NULL) AS still_bad,"
            " count(replayed_at) AS replayed FROM bad_events"
            " WHERE received_at >= $1 AND received_at < $2 GROUP BY 1, 2"
            " ORDER BY count(*) DESC, 1, 2 LIMIT $3",
            r.start,
            r.end,
            TOP_REASONS,
        ),
        pool.fetchval(f"SELECT count(*) FROM bad_events WHERE {matching}", *filters),
    )
    # A page past the end (the range or filter changed under it) shows the last one.
    pages = max(1, -(-int(found) // SAMPLES_PER_PAGE))
    page = min(q.page, pages)
    samples = await pool.fetch(
        "SELECT id, received_at, source, reason, reason_class, client_ip, user_agent,"
        " replayed_at, substring(raw FROM 1 FOR $7) AS raw, length(raw) AS raw_bytes"
        f" FROM bad_events WHERE {matching}"
        " ORDER BY received_at DESC, id DESC LIMIT $5 OFFSET $6",
        *filters,
        SAMPLES_PER_PAGE,
        (page - 1) * SAMPLES_PER_PAGE,
        RAW_PREVIEW_BYTES,
    )
    buckets = r.buckets()
    index = {moment: i for i, moment in enumerate(buckets)}
    series: dict[str, list[int]] = {}
    for row in counts:
        values = series.setdefault(row["reason_class"], [0] * len(buckets))
        values[index[row["bucket"]]] += int(row["n"])
    return {
        "range": describe_range(r),
        "buckets": [iso(moment) for moment in buckets],
        "counts": dict(sorted(series.items())),
        "total": sum(sum(values) for values in series.values()),
        "reasons": [
            {
                "reason_class": row["reason_class"],
                "reason": row["reason"],
                "still_bad": int(row["still_bad"]),
                "replayed": int(row["replayed"]),
            }
            for row in reasons
        ],
        "filter": {"reason_class": q.reason_class, "reason": q.reason},
        "matching": int(found),
        "page": page,
        "pages": pages,
        "samples": [
            {
                "id": row["id"],
                "received_at": iso(row["received_at"]),
                "source": row["source"],
                "reason": row["reason"],
                "reason_class": row["reason_class"],
                "client_ip": row["client_ip"],
                "user_agent": row["user_agent"],
                "replayed_at": iso(row["replayed_at"]),
                # Lossless for text, readable for binary: invalid bytes become \xNN.
                "raw": bytes(row["raw"]).decode("utf-8", "backslashreplace"),
                "raw_bytes": row["raw_bytes"],
                "truncated": row["raw_bytes"] > RAW_PREVIEW_BYTES,
            }
            for row in samples
        ],
    }


# --- customers ------------------------------------------------------------------------------

CUSTOMER_COLUMNS = (
    "visitor_key, user_id, first_seen_at, last_seen_at, events, sessions, orders,"
    " lifetime_value, last_order_at, first_source, device_type"
)
# Above every character in byte order (UTF-8 of U+10FFFF): the upper bound of a prefix range.
PREFIX_END = "\U0010ffff"


def _customer(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "visitor_key": row["visitor_key"],
        "user_id": row["user_id"],
        "known": row["user_id"] is not None,
        "first_seen_at": iso(row["first_seen_at"]),
        "last_seen_at": iso(row["last_seen_at"]),
        "events": int(row["events"]),
        "sessions": int(row["sessions"]),
        "orders": int(row["orders"]),
        "lifetime_value": float(row["lifetime_value"]),
        "last_order_at": iso(row["last_order_at"]),
        "first_source": row["first_source"],
        "device_type": row["device_type"],
    }


async def list_customers(pool: asyncpg.Pool, r: TimeRange, q: CustomerQuery) -> dict[str, Any]:
    """One page of customers in the chosen order, with the total and the neighbouring pages.

    Without a search: the customers last seen in the range (for a range that ends now, those
    active in it). A search is an id lookup (user id, else anonymous id, by prefix) over all
    time, so a customer is found whatever the range; its bounds rather than LIKE keep the
    primary key (bytewise: COLLATE "C", migrations 304 and 307) in the prepared statement's
    generic plan.
    """
    params: list[object] = []

    def param(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    if q.search:
        where = [
            f"visitor_key >= {param(q.search)}",
            f"visitor_key < {param(q.search + PREFIX_END)}",
        ]
    else:
        # The range's UTC hours (indexed) narrow the candidates, `last_seen_at` decides: it has
        # no index of its own, so a customer's updates within an hour stay HOT (migration 204).
        start, end = param(r.start), param(r.end)
        where = [
            f"last_seen_hour >= date_trunc('hour', {start}::timestamptz AT TIME ZONE 'UTC')",
            f"last_seen_hour < {end}::timestamptz AT TIME ZONE 'UTC'",
            f"last_seen_at >= {start}",
            f"last_seen_at < {end}",
        ]
    matching, count_params = " AND ".join(where), list(params)
    cursor = q.after or q.before
    backwards = q.before is not None
    if cursor is not None:
        # Both keys descend, so one row comparison finds the rows past the cursor.
        past = ">" if backwards else "<"
        where.append(
            f"({q.column}, visitor_key) {past} ({param(cursor.value)}, {param(cursor.visitor_key)})"
        )
    order = "ASC" if backwards else "DESC"
    total, rows = await asyncio.gather(
        pool.fetchval(f"SELECT count(*) FROM customers WHERE {matching}", *count_params),
        pool.fetch(
            f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE {' AND '.join(where)}"
            f" ORDER BY {q.column} {order}, visitor_key {order} LIMIT {param(q.limit + 1)}",
            *params,
        ),
    )
    more = len(rows) > q.limit
    page = list(reversed(rows[: q.limit])) if backwards else rows[: q.limit]
    has_next = True if backwards else more
    has_previous = more if backwards else cursor is not None
    return {
        "query": q.search,
        "sort": q.sort,
        "range": describe_range(r),
        "total": int(total),
        "customers": [_customer(row) for row in page],
        "next": _cursor(q, page[-1]) if page and has_next else None,
        "previous": _cursor(q, page[0]) if page and has_previous else None,
    }


def _cursor(q: CustomerQuery, row: asyncpg.Record) -> str:
    return encode_cursor(q.sort, row[q.column], row["visitor_key"])


# The newest events of a visitor, from its activity rows (one per batch, each holding up to 50
# of the visitor's events of that batch): the newest `$2` events lie in the `$2` rows that end
# latest, since each of those rows holds an event at least as new as any row after them.
TIMELINE_SQL = """
SELECT e.event_id, e.event_type, e.occurred_at, e.session_id, e.page_path, e.page_title,
       e.product_id, e.product_name, e.price::numeric(14, 2) AS price, e.quantity, e.order_id,
       e.revenue::numeric(14, 2) AS revenue, e.currency
FROM (SELECT events FROM visitor_activity WHERE visitor_key = $1
      ORDER BY last_at DESC LIMIT $2) a,
     json_to_recordset(a.events) AS e(event_id uuid, event_type text, occurred_at timestamptz,
                                       session_id text, page_path text, page_title text,
                                       product_id text, product_name text, price numeric,
                                       quantity int, order_id text, revenue numeric,
                                       currency text)
ORDER BY e.occurred_at DESC, e.event_id
LIMIT $2
"""


async def customer_profile(
    pool: asyncpg.Pool, visitor_key: str, timeline: int = 50
) -> dict[str, Any] | None:
    """A customer's profile, recent sessions and recent events (`TIMELINE_SQL`)."""
    customer, sessions, events = await asyncio.gather(
        pool.fetchrow(
            f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE visitor_key = $1", visitor_key
        ),
        pool.fetch(
            "SELECT session_id, started_at, last_seen_at, events, page_views, landing_url,"
            " referrer_class, utm_source, device_type, browser, purchased, revenue"
            " FROM sessions WHERE visitor_key = $1 ORDER BY last_seen_at DESC LIMIT 20",
            visitor_key,
        ),
        pool.fetch(TIMELINE_SQL, visitor_key, timeline),
    )
    if customer is None:
        return None
    return {
        "customer": _customer(customer),
        "sessions": [
            {
                **{
                    key: row[key]
                    for key in (
                        "session_id",
                        "landing_url",
                        "referrer_class",
                        "utm_source",
                        "device_type",
                        "browser",
                        "purchased",
                    )
                },
                "started_at": iso(row["started_at"]),
                "last_seen_at": iso(row["last_seen_at"]),
                "events": int(row["events"]),
                "page_views": int(row["page_views"]),
                "revenue": float(row["revenue"]),
            }
            for row in sessions
        ],
        "timeline": [
            {
                **{
                    key: row[key]
                    for key in (
                        "event_type",
                        "session_id",
                        "page_path",
                        "page_title",
                        "product_id",
                        "product_name",
                        "quantity",
                        "order_id",
                        "currency",
                    )
                },
                "event_id": str(row["event_id"]),
                "occurred_at": iso(row["occurred_at"]),
                "price": number(row["price"]) if row["price"] is not None else None,
                "revenue": number(row["revenue"]) if row["revenue"] is not None else None,
            }
            for row in events
        ],
    }
