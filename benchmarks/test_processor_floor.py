"""The floor's least writes and its every-feature writes (benchmarks/processor_floor.py) keep
what they stand in for: on the same batches, the same event ids, sessions, events per session and
customer, and counts per minute and event type as the sink; every feature also the same funnel
steps, product counters and timeline events. A floor that stored less would measure less work."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from processor_floor import (
    EVERY_FEATURE_TABLES_SQL,
    LEAST_TABLES_SQL,
    Cost,
    write_every_feature,
    write_least,
)
from processor_throughput import fresh_database
from processor_workload import batches

from clickstream.local_postgres import postgres_url
from processor.core import decode
from processor.migrations import migrate
from processor.postgres import KnownRows, PostgresSink, create_sink_pool

SAME_FIGURES = {
    "event ids": ("SELECT count(*) FROM least_event_ids", "SELECT count(*) FROM event_ids"),
    "sessions": ("SELECT count(*) FROM least_sessions", "SELECT count(*) FROM sessions"),
    "events of sessions": (
        "SELECT sum(events) FROM least_sessions", "SELECT sum(events) FROM sessions",
    ),
    "events of customers": (
        "SELECT sum(events) FROM least_customers", "SELECT sum(events) FROM customers",
    ),
    "counts per minute and type": (
        "SELECT array_agg((minute, event_type, events) ORDER BY minute, event_type)"
        " FROM least_minutes",
        "SELECT array_agg((minute, event_type, events) ORDER BY minute, event_type)"
        " FROM metrics_minute",
    ),
}  # fmt: skip
EVERY_FEATURE_FIGURES = {
    **{
        name: (least.replace("least_", "every_"), stored)
        for name, (least, stored) in SAME_FIGURES.items()
    },
    "funnel steps": (
        "SELECT count(*) FROM every_funnel_steps", "SELECT count(*) FROM funnel_steps",
    ),
    "product counters": (
        "SELECT array_agg((hour, product_id, views, carts, removals, units)"
        ' ORDER BY hour, product_id COLLATE "C") FROM every_products',
        "SELECT array_agg((hour, product_id, views, carts, removals, units)"
        ' ORDER BY hour, product_id COLLATE "C") FROM product_metrics_hour',
    ),
    "timeline events": (
        "SELECT sum(json_array_length(events)) FROM every_activity",
        "SELECT sum(json_array_length(events)) FROM visitor_activity",
    ),
}  # fmt: skip


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of its own on DATABASE_URL's server (or an embedded one), dropped after."""
    with postgres_url() as url:
        async with fresh_database(url) as scratch:
            yield scratch


async def test_the_floors_writes_store_what_the_sink_stores_of_the_same_keys(database: str) -> None:
    await migrate(database)
    work = [next(batches("shoppers", 2_000)) for _ in range(3)]
    conn = await asyncpg.connect(database)
    pool = await create_sink_pool(database, max_size=1)
    try:
        await conn.execute(LEAST_TABLES_SQL)
        await conn.execute(EVERY_FEATURE_TABLES_SQL)
        sink, cost, every, known = PostgresSink(pool), Cost(), Cost(), KnownRows()
        for messages in work:
            await write_least(conn, decode(messages).events, cost)
            await write_every_feature(conn, decode(messages).events, every, known)
            await sink.write(decode(messages).events, [])
        for name, (least, stored) in (SAME_FIGURES | EVERY_FEATURE_FIGURES).items():
            assert await conn.fetchval(least) == await conn.fetchval(stored), name
        assert cost.rows["event ids"] == every.rows["event ids"] == 6_000
        assert set(cost.statements) == set(cost.rows)
        assert set(every.statements) == set(every.rows)
    finally:
        await pool.close()
        await conn.close()
