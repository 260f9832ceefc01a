"""The open-loop generator counts waiting as latency (no coordinated omission)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openloop import run

RESPONSE = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"


async def slow_server(delay: float) -> asyncio.Server:
    """Answers every request after `delay` seconds, one at a time per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(RESPONSE)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def measure(rate: float) -> dict[str, object]:
    server = await slow_server(0.05)
    port = server.sockets[0].getsockname()[1]
    try:
        return await run(f"http://127.0.0.1:{port}/v1/events", b"{}", [], rate, 1.0, 2)
    finally:
        server.close()


def test_under_capacity_latency_is_the_service_time() -> None:
    # 2 connections x 20 req/s each = 40 req/s capacity; 10 req/s offered.
    result = asyncio.run(measure(10))
    assert result["answered"] == 10 and result["statuses"] == {"202": 10}
    assert 45 <= result["p50_ms"] < 150


def test_over_capacity_waiting_counts_as_latency() -> None:
    # 100 req/s offered for 1 s against 40 req/s: requests queue behind busy connections,
    # and their latency runs from when they were due, not from when a connection freed up.
    result = asyncio.run(measure(100))
    assert result["sent"] == 100
    assert result["achieved_rps"] < 60
    assert result["p99_ms"] > 500
