"""Where PostgreSQL spends the sink's time: each statement of the batch transaction, measured.

    .venv/bin/python benchmarks/processor_pg_profile.py [--workload shoppers|worst]
        [--batches 10] [--batch 5000]

Writes consecutive batches through `PostgresSink` on one connection and times every statement
it sends (multi-statement scripts are sent one statement at a time): wall time, the WAL it
writes (`pg_current_wal_insert_lsn` read from a second connection around it) and, when the
server runs on this machine, the server process's own CPU time (from /proc/PID/schedstat), per
batch and per event. The first batch warms up and is not counted. pg_stat_statements and
auto_explain would say the same from inside the server, but neither ships with pgserver.
Against DATABASE_URL or a throwaway pgserver; noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg
from processor_throughput import backend_cpu
from processor_workload import batches

from clickstream.local_postgres import postgres_url
from processor.core import decode
from processor.db import Connection
from processor.migrations import migrate
from processor.postgres import PostgresSink, create_sink_pool

_STATEMENT_END = re.compile(r";\s*\n")


def label(sql: str) -> str:
    """A statement's first words, comments left out."""
    lines = [line for line in sql.strip().splitlines() if not line.lstrip().startswith("--")]
    return " ".join(" ".join(lines).split())[:72]


WAL_POSITION_SQL = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"


class Timings:
    def __init__(self, pid: int, observer: Connection) -> None:
        self.pid = pid
        self.local = Path(f"/proc/{pid}/schedstat").exists()
        self.observer = observer  # reads the WAL position; one batch at a time, so it is ours
        self.wall: defaultdict[str, float] = defaultdict(float)
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.wal: defaultdict[str, int] = defaultdict(int)
        self.counting = False

    def server_cpu(self) -> float:
        return backend_cpu(self.pid) if self.local else 0.0

    async def wal_position(self) -> int:
        return int(await self.observer.fetchval(WAL_POSITION_SQL)) if self.counting else 0

    async def measure(self, name: str, call: Any) -> Any:
        wal = await self.wal_position()
        wall, cpu = time.perf_counter(), self.server_cpu()
        try:
            return await call
        finally:
            if self.counting:
                self.wall[name] += time.perf_counter() - wall
                self.cpu[name] += self.server_cpu() - cpu
                self.wal[name] += await self.wal_position() - wal


class TimedConnection:
    """The sink's connection, with every statement measured."""

    def __init__(self, conn: Connection, timings: Timings) -> None:
        self._conn = conn
        self._timings = timings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, sql: str, *args: Any) -> str:
        if args:
            return cast(
                str, await self._timings.measure(label(sql), self._conn.execute(sql, *args))
            )
        status = ""
        for statement in _STATEMENT_END.split(sql):
            if label(statement):
                status = await self._timings.measure(
                    label(statement), self._conn.execute(statement)
                )
        return status

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return cast(
            list[asyncpg.Record],
            await self._timings.measure(label(sql), self._conn.fetch(sql, *args)),
        )

    async def copy_records_to_table(self, table: str, **options: Any) -> str:
        call = self._conn.copy_records_to_table(table, **options)
        return cast(str, await self._timings.measure(f"COPY {table}", call))


class TimedPool:
    def __init__(self, conn: Connection, timings: Timings) -> None:
        self._conn = TimedConnection(conn, timings)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[TimedConnection]:
        yield self._conn


async def run(database_url: str, workload: str, count: int, size: int) -> None:
    await migrate(database_url)
    pool = await create_sink_pool(database_url, max_size=1)
    stream = batches(workload, size)
    work = [decode(next(stream)).events for _ in range(count + 1)]
    observer = await asyncpg.connect(database_url)
    async with pool.acquire() as conn:
        timings = Timings(conn.get_server_pid(), observer)
        sink = PostgresSink(cast(asyncpg.Pool, TimedPool(conn, timings)))
        start = backend_start = 0.0
        for n, batch in enumerate(work):
            if n == 1:  # the first batch warms caches and plans
                timings.counting, start = True, time.perf_counter()
                backend_start = timings.server_cpu()
            await sink.write(batch, [])
        total = time.perf_counter() - start
        backend = timings.server_cpu() - backend_start
    await pool.close()
    await observer.close()

    events = sum(len(batch) for batch in work[1:])
    statements = sum(timings.wall.values())
    print(f"workload {workload}: {count} batches of {size}, one connection, one batch at a time")
    print(f"{events / total:,.0f} events/s wall; per batch: {total / count * 1e3:.1f} ms, of which")
    print("statements (server CPU and wall per batch, server CPU and WAL bytes per event):")
    for name in sorted(timings.wall, key=lambda name: -timings.cpu[name] or -timings.wall[name]):
        cpu = timings.cpu[name]
        print(f"  cpu {cpu / count * 1e3:6.1f} ms {cpu / events * 1e6:5.1f} us  "
              f"wal {timings.wal[name] / events:6.0f} B  "
              f"wall {timings.wall[name] / count * 1e3:6.1f} ms  {name}")  # fmt: skip
    wal = sum(timings.wal.values())
    if timings.local:
        cpu = sum(timings.cpu.values())
        print(f"  all statements: server CPU {cpu / events * 1e6:.1f} us per event "
              f"({events / cpu:,.0f} events/s per core), "
              f"WAL {wal / events:,.0f} B per event")  # fmt: skip
        print(f"  the backend in all (statements, savepoints, commits): server CPU "
              f"{backend / events * 1e6:.1f} us per event")  # fmt: skip
    else:
        print(f"  all statements: WAL {wal / events:,.0f} B per event")
    print(f"  outside statements (commit, processor work): "
          f"{(total - statements) / count * 1e3:.1f} ms per batch")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("shoppers", "worst"), default="shoppers")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()
    options = (args.workload, args.batches, args.batch)
    with postgres_url() as url:
        asyncio.run(run(url, *options))


if __name__ == "__main__":
    main()
