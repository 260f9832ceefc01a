"""Open-loop HTTP/1.1 load at a fixed rate, latency measured from the intended send time.

    .venv/bin/python benchmarks/openloop.py URL --rate 5000 --duration 5 --body FILE
        [--connections 256] [--header "Authorization: Bearer bench"]

wrk keeps N requests in flight and sends the next one only when an answer came back, so a
server that stalls is simply sent less (coordinated omission): its p99 looks fine exactly when
it is not. Here request i is due at `start + i / rate` whatever happens. Due requests go to an
idle keep-alive connection at once, or wait in a client-side queue; latency is measured from
the due time, so time spent waiting for a connection counts. Requests still unanswered at the
end are reported (and counted in the percentiles with the time they had waited).

One process, uvloop, asyncio protocols over raw sockets: a tick every 0.5 ms releases what is
due. It prints one JSON object. benchmarks/run.py runs it against raw Granian to show at which
rate the generator itself stops keeping up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

TICK_S = 0.0005
GRACE_S = 2.0


class Connection(asyncio.Protocol):
    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0
        self.need = -1  # bytes of the current response still expected after its head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, due: float) -> None:
        self.due = due
        assert self.transport is not None
        self.transport.write(self.generator.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            start = head.find(b"content-length:")
            length = 0
            if start >= 0:
                line_end = head.find(b"\r\n", start)
                length = int(head[start + 15 : line_end if line_end >= 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            status = int(head[9:12])
            del self.buffer[:total]
            self.generator.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)


class Generator:
    def __init__(self, request: bytes, rate: float, duration: float) -> None:
        self.request = request
        self.interval = 1.0 / rate
        self.total = int(rate * duration)
        self.scheduled = 0
        self.start = 0.0
        self.pending: collections.deque[float] = collections.deque()
        self.idle: list[Connection] = []
        self.busy: set[Connection] = set()
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0
        self.finished = asyncio.Event()

    def tick(self) -> None:
        now = time.perf_counter()
        while self.scheduled < self.total:
            due = self.start + self.scheduled * self.interval
            if due > now:
                break
            self.pending.append(due)
            self.scheduled += 1
        while self.pending and self.idle:
            connection = self.idle.pop()
            self.busy.add(connection)
            connection.send(self.pending.popleft())
        if self.scheduled < self.total:
            asyncio.get_running_loop().call_later(TICK_S, self.tick)
        elif not self.pending and not self.busy:
            self.finished.set()

    def answered(self, connection: Connection, status: int) -> None:
        self.latencies.append(time.perf_counter() - connection.due)
        self.statuses[status] += 1
        if self.pending:
            connection.send(self.pending.popleft())
            return
        self.busy.discard(connection)
        self.idle.append(connection)
        if self.scheduled >= self.total and not self.busy:
            self.finished.set()

    def lost(self, connection: Connection) -> None:
        if connection in self.busy:
            self.busy.discard(connection)
            self.errors += 1
        if connection in self.idle:
            self.idle.remove(connection)


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(
    url: str, body: bytes, headers: list[str], rate: float, duration: float, connections: int
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    generator = Generator(request, rate, duration)
    loop = asyncio.get_running_loop()
    for _ in range(connections):
        _, protocol = await loop.create_connection(lambda: Connection(generator), host, port)
        generator.idle.append(protocol)
    generator.start = time.perf_counter()
    generator.tick()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(generator.finished.wait(), duration + GRACE_S)
    elapsed = time.perf_counter() - generator.start
    end = time.perf_counter()
    # Unanswered requests count with the time they have waited so far (a lower bound).
    waited = [end - due for due in generator.pending]
    waited += [end - connection.due for connection in generator.busy]
    unanswered = len(waited)
    latencies = sorted(generator.latencies + waited)
    answered = len(generator.latencies)
    for connection in generator.idle + list(generator.busy):
        if connection.transport is not None:
            connection.transport.close()
    return {
        "offered_rps": rate,
        "achieved_rps": answered / max(elapsed, duration),
        "sent": generator.scheduled,
        "answered": answered,
        "unanswered": unanswered + (generator.total - generator.scheduled),
        "errors": generator.errors,
        "statuses": {str(k): v for k, v in sorted(generator.statuses.items())},
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p90_ms": percentile(latencies, 0.90) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "p999_ms": percentile(latencies, 0.999) * 1e3,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of scheduled load")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--body", type=Path, required=True, help="file with the request body")
    parser.add_argument("--header", action="append", default=[], help='"Name: value"')
    args = parser.parse_args()
    result = uvloop.run(
        run(
            args.url,
            args.body.read_bytes(),
            args.header,
            args.rate,
            args.duration,
            args.connections,
        )
    )
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
