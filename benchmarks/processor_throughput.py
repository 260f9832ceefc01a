"""Bounded end-to-end run of the processing core: decode + enrich + PostgreSQL sink.

    .venv/bin/python benchmarks/processor_throughput.py [--events 100000] [--concurrency 3]

Feeds gateway envelopes (100 events each, batches of 5,000 events) through `Processor.process`
with several batches in flight, as the worker does, against DATABASE_URL or a throwaway
pgserver. Prints wall-clock events/s and the processor's own CPU per event (events/s per
core of the client); the rest of the wall time is PostgreSQL's work. On a shared machine the
numbers are noisy: compare runs, not single figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from processor_workload import messages

from processor.core import Processor, decode
from processor.migrations import migrate
from processor.postgres import PostgresSink, create_sink_pool

PER_BATCH = 5_000


async def run(database_url: str, total: int, concurrency: int) -> None:
    await migrate(database_url)
    pool = await create_sink_pool(database_url, max_size=concurrency)
    processor = Processor(PostgresSink(pool))
    batches = [messages(PER_BATCH, seed=seed) for seed in range(total // PER_BATCH)]
    decode(batches[0])  # warm the caches, as a running worker has them

    cpu = time.process_time()
    start = time.perf_counter()
    for batch in batches:
        decode(batch)
    decode_cpu = time.process_time() - cpu
    decode_wall = time.perf_counter() - start

    slots = asyncio.Semaphore(concurrency)

    async def one(batch: list) -> None:
        async with slots:
            await processor.process(batch)

    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(one(batch) for batch in batches))
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - cpu
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM events")
    await pool.close()
    n = len(batches) * PER_BATCH
    print(f"events                     {n} (stored {stored})")
    print(f"decode + enrich only       {n / decode_wall:,.0f} events/s wall, "
          f"{n / decode_cpu:,.0f} events/s per core (CPU)")  # fmt: skip
    print(f"decode + enrich + PG sink  {n / wall:,.0f} events/s wall (concurrency {concurrency})")
    print(f"  processor CPU            {n / client_cpu:,.0f} events/s per core "
          f"({client_cpu / wall:.0%} of one core busy; the rest is PostgreSQL)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url:
        asyncio.run(run(url, args.events, args.concurrency))
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="clickstream-bench-pg-") as data_dir:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
        try:
            asyncio.run(run(server.get_uri(), args.events, args.concurrency))
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
