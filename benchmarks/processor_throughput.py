"""Bounded end-to-end run of the processing core: decode + enrich + PostgreSQL sink.

    .venv/bin/python benchmarks/processor_throughput.py [--workload shoppers|worst]
        [--events 100000] [--batch 20000] [--concurrency 3] [--gc tuned|default] [--backends]

Feeds gateway envelopes (100 events each) in batches through `Processor.process` with several
batches in flight, as the worker does, against DATABASE_URL or a throwaway pgserver. Workloads
(benchmarks/processor_workload.py): `shoppers`, the load generator's shopper model (realistic),
and `worst`, where nearly every event is its session's and customer's only one in the batch.
The batch size and the garbage collector's settings default to the worker's
(`processor.options.WorkerOptions`, `clickstream_contract.gc_tuning`); `--gc default` keeps
Python's.

Prints wall-clock events/s and CPU per event on each side: the processor's own (this process)
and PostgreSQL's (every process of the server, when it runs on this machine: backends, WAL
writer, checkpointer). With `--backends`, what limits the wall figure: `pg_stat_activity`,
sampled every 10 ms while the batches are written, gives how many of the run's backends were
busy at once, and which statements they ran most often (the apply round's statements begin with
`WITH d AS (DELETE FROM delta_`); the sampling's own queries add to PostgreSQL's CPU. On a
shared machine the numbers are noisy: compare runs, not single figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg
from processor_workload import batches

from clickstream.local_postgres import postgres_url
from clickstream_contract.gc_tuning import tune_after_startup
from processor.core import Processor, decode
from processor.migrations import migrate
from processor.options import WorkerOptions
from processor.postgres import PostgresSink, create_sink_pool

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    # Fields after "(comm)": state, ppid, ..., utime and stime at indexes 11 and 12.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu(postmaster: int) -> float:
    """CPU seconds used so far by the server's postmaster and its children, those that exited
    included (autovacuum workers come and go): the postmaster's own and its waited-for
    children's times, plus each live child's."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except OSError:
            continue  # exited meanwhile
        if int(entry.name) == postmaster:
            total += sum(int(f) for f in fields[11:15]) / _TICK
        elif int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def backend_cpu(pid: int) -> float:
    """CPU seconds a process ran so far, to the nanosecond (/proc's scheduler statistics)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own on the server, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def sample_backends(
    database_url: str, stop: asyncio.Event
) -> tuple[Counter[int], Counter[str]]:
    """Until `stop`: per 10 ms sample, how many of the database's other backends run a
    statement, and what each of those runs (its first words; "waiting for the client" when it
    waits in the middle of a COPY for the processor's next rows)."""
    busy: Counter[int] = Counter()
    running: Counter[str] = Counter()
    conn = await asyncpg.connect(database_url)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                """SELECT wait_event = 'ClientRead' AS client,
                          left(regexp_replace(query, '\\s+', ' ', 'g'), 48) AS query
                   FROM pg_stat_activity
                   WHERE datname = current_database() AND state = 'active'
                     AND pid <> pg_backend_pid()"""
            )
            busy[sum(not row["client"] for row in rows)] += 1
            for row in rows:
                running[("waiting for the client: " if row["client"] else "") + row["query"]] += 1
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    return busy, running


def local_postmaster(backend_pid: int) -> int | None:
    """The server's postmaster pid if the server runs on this machine, else None."""
    try:
        if b"postgres" not in Path(f"/proc/{backend_pid}/cmdline").read_bytes():
            return None
        return int(_stat(backend_pid)[1])
    except OSError:
        return None


async def run(
    database_url: str,
    workload: str,
    total: int,
    size: int,
    concurrency: int,
    gc: str,
    backends: bool,
) -> None:
    await migrate(database_url)
    pool = await create_sink_pool(database_url, max_size=concurrency)
    processor = Processor(PostgresSink(pool))
    if gc == "tuned":  # as the worker does once started
        tune_after_startup()
    stream = batches(workload, size)
    decode(next(stream))  # warm the caches, as a running worker has them
    work = [next(stream) for _ in range(max(1, total // size))]
    async with pool.acquire() as conn:
        postmaster = local_postmaster(conn.get_server_pid())
        stored_before = await conn.fetchval("SELECT count(*) FROM event_ids")

    cpu = time.process_time()
    start = time.perf_counter()
    decoded = [decode(batch) for batch in work]
    decode_cpu = time.process_time() - cpu
    decode_wall = time.perf_counter() - start
    n = sum(len(batch.events) for batch in decoded)
    del decoded

    slots = asyncio.Semaphore(concurrency)

    async def one(batch: list) -> None:
        async with slots:
            await processor.process(batch)

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_backends(database_url, stop)) if backends else None
    server_before = server_cpu(postmaster) if postmaster else 0.0
    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(one(batch) for batch in work))
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - cpu
    stop.set()
    busy, running = await sampler if sampler else (None, None)
    server = server_cpu(postmaster) - server_before if postmaster else None
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM event_ids") - stored_before
    await pool.close()

    print(f"workload {workload}: {n} events in batches of {size} (stored {stored}), gc {gc}")
    print(f"decode + enrich only       {n / decode_wall:,.0f} events/s wall, "
          f"{n / decode_cpu:,.0f} events/s per core (CPU)")  # fmt: skip
    print(f"decode + enrich + PG sink  {n / wall:,.0f} events/s wall (concurrency {concurrency})")
    print(f"  processor CPU            {n / client_cpu:,.0f} events/s per core "
          f"({client_cpu / wall:.0%} of a core)")  # fmt: skip
    if server is None:
        print("  PostgreSQL CPU           n/a (server not on this machine)")
    else:
        print(f"  PostgreSQL CPU           {n / server:,.0f} events/s per core "
              f"({server / wall:.0%} of a core)")  # fmt: skip
        print(f"  both                     {n / (client_cpu + server):,.0f} events/s per core "
              f"({(client_cpu + server) * 1e6 / n:.1f} us CPU per event)")  # fmt: skip
    if busy is not None and running is not None:
        samples = sum(busy.values())
        print("  PostgreSQL backends busy at once, share of the time: " + ", ".join(
            f"{count}: {hits / samples:.0%}" for count, hits in sorted(busy.items())))  # fmt: skip
        print("  statements running, share of the time (most sampled):")
        for query, hits in running.most_common(6):
            print(f"    {hits / samples:4.0%}  {query}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("shoppers", "worst"), default="shoppers")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=WorkerOptions.max_batch_events)
    parser.add_argument("--concurrency", type=int, default=WorkerOptions.concurrency)
    parser.add_argument("--gc", choices=("tuned", "default"), default="tuned")
    parser.add_argument(
        "--backends", action="store_true", help="sample pg_stat_activity (adds ~1 us per event)"
    )
    args = parser.parse_args()
    options = (args.workload, args.events, args.batch, args.concurrency, args.gc, args.backends)
    with postgres_url() as url:
        asyncio.run(run(url, *options))


if __name__ == "__main__":
    main()
