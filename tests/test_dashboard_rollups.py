"""The dashboard's rollups stay equal to the processor's tables they summarize, when the
processor's own sink writes (upserts, redeliveries) go through their triggers."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from dashboard_testing import drop_database, migrated_database

from processor.postgres import PostgresSink, create_sink_pool
from processor.records import EnrichedEvent

START = datetime(2026, 3, 2, 9, 40, tzinfo=UTC)
TYPES = ["page_view", "product_view", "add_to_cart", "begin_checkout", "purchase"]


def events(n: int, rng: random.Random) -> list[EnrichedEvent]:
    batch = []
    for _ in range(n):
        event_type = rng.choice(TYPES)
        product = f"P{rng.randint(1, 4)}" if event_type != "page_view" else None
        visitor = f"v{rng.randint(1, 12)}"
        at = START + timedelta(minutes=rng.randint(0, 26 * 60))
        batch.append(
            EnrichedEvent(
                event_id=uuid.uuid4(),
                event_type=event_type,
                occurred_at=at,
                received_at=at,
                source="web",
                visitor_key=visitor,
                anonymous_id=visitor,
                user_id=None,
                session_id=f"s-{visitor}-{at.hour}",
                product_id=product,
                product_name=product and f"Product {product}",
                price=10.0 if product else None,
                quantity=1 if event_type == "purchase" else None,
                order_id=f"o-{uuid.uuid4().hex[:6]}" if event_type == "purchase" else None,
                revenue=10.0 if event_type == "purchase" else None,
            )
        )
    return batch


@pytest.fixture
async def url(database_url: str) -> AsyncIterator[str]:
    url = await migrated_database(database_url)
    yield url
    await drop_database(database_url, url)


async def test_rollups_match_their_sources(url: str) -> None:
    rng = random.Random(7)
    pool = await create_sink_pool(url)
    try:
        sink = PostgresSink(pool)
        first = events(150, rng)
        await sink.write(first, [])
        await sink.write(events(150, rng), [])
        await sink.write(first[:50], [])  # a redelivery adds nothing anywhere
    finally:
        await pool.close()
    conn = await asyncpg.connect(url)
    try:
        checks = {
            "metrics_hour": """
                SELECT date_trunc('hour', minute, 'UTC') AS hour, event_type,
                       sum(events) AS events, sum(revenue) AS revenue
                FROM metrics_minute GROUP BY 1, 2
                EXCEPT SELECT hour, event_type, events, revenue FROM metrics_hour""",
            "funnel_hour": """
                SELECT date_trunc('hour', reached_at, 'UTC'), step, count(*) FROM funnel_steps
                GROUP BY 1, 2 EXCEPT SELECT hour, step, sessions FROM funnel_hour""",
            "product_metrics_day": """
                SELECT date_trunc('day', hour, 'UTC'), product_id, sum(views), sum(carts),
                       sum(units), sum(revenue)
                FROM product_metrics_hour GROUP BY 1, 2
                EXCEPT SELECT day, product_id, views, carts, units, revenue
                FROM product_metrics_day""",
        }
        for table, missing in checks.items():
            assert await conn.fetch(missing) == [], table
        assert await conn.fetchval("SELECT sum(events) FROM metrics_hour") == 300
        assert await conn.fetchval("SELECT count(DISTINCT day) FROM product_metrics_day") == 2
        assert await conn.fetchval("SELECT count(*) FROM funnel_hour") > 5
    finally:
        await conn.close()
