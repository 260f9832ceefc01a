"""The dashboard's customer list (dashboard/queries.py list_customers) per range and sort, with
and without migration 102's sort indexes, in one run.

    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/customer_list_bench.py [--reads 12]

Reads the database `benchmarks/dashboard_bench.py` seeded (5M events over 30 days). It times
the first page and the seventh (six `next` cursors on) of every range and sort; then drops the
two sort indexes, times again, and creates them again: run it on a benchmark database only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from dashboard import queries
from dashboard.listing import SORTS, parse_customer_query
from dashboard.ranges import parse_range

SORT_INDEXES = (
    Path(__file__).parent.parent / "processor/migrations/102_dashboard_customer_sorts.sql"
)
RANGES = ("15m", "24h", "30d")


async def page_ms(pool: asyncpg.Pool, range_name: str, sort: str, pages: int) -> float:
    """Milliseconds to read page `pages` (1 is the first) of one range and sort."""
    time_range = parse_range({"range": range_name}, datetime.now(UTC))
    cursor = None
    for _ in range(pages - 1):
        query = {"sort": sort, **({"after": cursor} if cursor else {})}
        cursor = (await queries.list_customers(pool, time_range, parse_customer_query(query)))[
            "next"
        ]
        if cursor is None:
            return float("nan")
    query = {"sort": sort, **({"after": cursor} if cursor else {})}
    started = time.perf_counter()
    await queries.list_customers(pool, time_range, parse_customer_query(query))
    return (time.perf_counter() - started) * 1000


async def table(pool: asyncpg.Pool, reads: int) -> None:
    print(f"{'range':6} {'sort':15} {'page 1 median':>14} {'max':>7} {'page 7 median':>14}")
    for range_name in RANGES:
        for sort in SORTS:
            await page_ms(pool, range_name, sort, 1)  # warm: plans, caches
            first = [await page_ms(pool, range_name, sort, 1) for _ in range(reads)]
            seventh = [await page_ms(pool, range_name, sort, 7) for _ in range(3)]
            print(
                f"{range_name:6} {sort:15} {statistics.median(first):11.1f} ms"
                f" {max(first):7.1f} {statistics.median(seventh):11.1f} ms",
                flush=True,
            )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=12, help="first-page reads per case")
    args = parser.parse_args()
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=2)
    try:
        customers = await pool.fetchval("SELECT count(*) FROM customers")
        print(
            f"{customers:,} customers; machine: {os.cpu_count()} cores, shared: timings are noisy"
        )
        print("\nwith the sort indexes (migration 102)")
        await table(pool, args.reads)
        await pool.execute(
            "DROP INDEX customers_lifetime_value_idx; DROP INDEX customers_orders_idx"
        )
        try:
            print("\nwithout them")
            await table(pool, args.reads)
        finally:
            await pool.execute(SORT_INDEXES.read_text())
    finally:
        await pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
