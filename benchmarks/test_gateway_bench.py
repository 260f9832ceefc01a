"""Micro-benchmarks of the gateway's hot path: validate, encode the envelope, batch.

`pytest benchmarks` runs each once (CI: --benchmark-disable is the default);
`pytest benchmarks/test_gateway_bench.py --benchmark-enable` measures.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from clickstream_contract import envelope
from clickstream_contract.envelope import Group
from gateway.batcher import Batcher, group_size
from gateway.validation import check_batch, check_single

pytestmark = pytest.mark.benchmark(group="gateway")


def raw_event(index: int) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.UUID(int=index + 1)),
            "event_type": "product_view",
            "occurred_at": "2026-01-02T03:04:05Z",
            "anonymous_id": "anon-6f1c2d",
            "page": {"url": "https://shop.example.com/p/123", "title": "Running shoe"},
            "context": {"user_agent": "Mozilla/5.0", "locale": "en-US"},
            "product": {"product_id": "p-123", "price": 59.9, "currency": "EUR"},
        }
    ).encode()


SINGLE = raw_event(0)
BATCH = b'{"events":[' + b",".join(raw_event(i) for i in range(100)) + b"]}"


def group(events: int) -> Group:
    return Group(
        received_at=datetime.now(UTC),
        source="web",
        events=[raw_event(i) for i in range(events)],
        client_ip="203.0.113.9",
        user_agent="Mozilla/5.0",
    )


def test_validate_single_event(benchmark: Any) -> None:
    checked = benchmark(check_single, SINGLE, 32 * 1024)
    assert checked.good == [SINGLE]


def test_validate_batch_of_100(benchmark: Any) -> None:
    checked = benchmark(check_batch, BATCH, 32 * 1024, 500)
    assert len(checked.good) == 100


def test_encode_envelope_of_25_single_event_requests(benchmark: Any) -> None:
    groups = [group(1) for _ in range(25)]
    data = benchmark(envelope.encode, "events", groups)
    assert envelope.decode(data).event_count == 25


def test_encode_envelope_of_10_batches(benchmark: Any) -> None:
    groups = [group(100) for _ in range(10)]
    data = benchmark(envelope.encode, "events", groups)
    assert envelope.decode(data).event_count == 1000


def test_batcher_1000_requests(benchmark: Any) -> None:
    """Submit 1000 single-event requests and wait for all; `publish` returns at once so this
    is the batcher's own cost (futures, cuts, encoding), not Pub/Sub's."""
    published: list[int] = []

    async def publish(data: bytes, attributes: dict[str, str]) -> None:
        published.append(int(attributes["event_count"]))

    groups = [group(1) for _ in range(1000)]
    loop = asyncio.new_event_loop()

    async def run() -> None:
        batcher = Batcher(
            "events",
            publish,
            flush_s=0.003,
            max_bytes=1024 * 1024,
            max_groups=250,
            max_inflight=8,
            queue_max_bytes=64 * 1024 * 1024,
        )
        futures = [batcher.submit(g, group_size(g)) for g in groups]
        await asyncio.gather(*futures)

    try:
        benchmark(lambda: loop.run_until_complete(run()))
    finally:
        loop.close()
    assert sum(published) % 1000 == 0 and max(published) == 250
