"""The identity merge's query plan on a seeded database: which scans each table gets.

    DATABASE_URL=... .venv/bin/python benchmarks/identity_merge_plan.py [--visitors 5]
        [--links 200000] [--batch 20000]

Against a database filled by `clickstream dashboard seed` (any size; the point is the plan on
big tables), on a session set up as the sink's (`SINK_SERVER_SETTINGS`). In one transaction
that is rolled back: runs `EXPLAIN (ANALYZE, BUFFERS)` of the
link lookup every batch makes (`processor.identities.LINKS_SQL`) with `--links` other links
stored and `--batch` anonymous ids (half of them linked), then records links for the
`--visitors` anonymous customers with the most events (`RECORD_LINKS_SQL`) and explains the
merge as `merge_pending` runs it (`LOCK_PROFILES_SQL`, then `MERGE_SQL`). Prints the plans and,
per table, the scans used; exits 1 if a sequential scan of a stored table remains.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime

import asyncpg

from clickstream.local_postgres import postgres_url
from processor.identities import (
    LINKS_SQL,
    LOCK_PROFILES_SQL,
    MERGE_SQL,
    PENDING_IDS_SQL,
    RECORD_LINKS_SQL,
)
from processor.postgres import SINK_SERVER_SETTINGS

_SCAN = re.compile(
    r"(?<!Bitmap )((?:Parallel )?(?:Seq|Index Only|Index|Bitmap Heap) Scan)"
    r"(?: using (\S+))? on (\w+)"
)


async def stage_links(conn: asyncpg.Connection, links: int, batch: int) -> list[str]:
    """`links` links of other ids (statistics refreshed, as autovacuum keeps them); returns a
    batch's `batch` anonymous ids, half of them linked."""
    await conn.execute(
        """INSERT INTO identities (anonymous_id, user_id, linked_at, merged_at)
           SELECT 'linked-' || n, 'user-' || n, now(), now() FROM generate_series(1, $1) n
           ON CONFLICT DO NOTHING""",
        links,
    )
    await conn.execute("ANALYZE identities")
    return [f"linked-{n * 7 % max(links, 1)}" if n % 2 == 0 else f"anon-{n}" for n in range(batch)]


async def stage_identifies(conn: asyncpg.Connection, visitors: int) -> list[str]:
    """Links (pending) for the anonymous customers with the most events, as a batch of
    `identify` events records them."""
    anonymous = [
        row[0]
        for row in await conn.fetch(
            "SELECT visitor_key FROM customers WHERE user_id IS NULL"
            " ORDER BY events DESC, 1 LIMIT $1",
            visitors,
        )
    ]
    await conn.execute(
        RECORD_LINKS_SQL,
        anonymous,
        [f"merge-user-{a}" for a in anonymous],
        [datetime.now(UTC)] * len(anonymous),
    )
    return anonymous


def scans(plan: str) -> list[tuple[str, str, str]]:
    return [(m[3], m[1], m[2] or "") for m in _SCAN.finditer(plan)]


async def explain(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
    return "\n".join(row[0] for row in rows)


async def run(database_url: str, visitors: int, links: int, batch: int) -> int:
    conn = await asyncpg.connect(database_url, server_settings=SINK_SERVER_SETTINGS)
    try:
        sizes: dict[str, int] = dict(
            (row[0], row[1])
            for row in await conn.fetch(
                "SELECT relname, n_live_tup FROM pg_stat_user_tables"
                " WHERE relname IN ('visitor_activity', 'visitor_minutes', 'visitor_hours',"
                " 'visitor_days', 'sessions', 'customers', 'metrics_minute', 'identities')"
            )
        )
        print("table sizes:", ", ".join(f"{k} {v:,}" for k, v in sorted(sizes.items())))
        bad: list[tuple[str, str, str]] = []

        async def show(name: str, sql: str, *args: object) -> None:
            plan = await explain(conn, sql, *args)
            print(f"--- {name}\n{plan}\n\nscans in {name}:")
            used = scans(plan)
            for table, kind, index in sorted(set(used)):
                print(f"  {table:18} {kind}{' using ' + index if index else ''}")
            bad.extend(s for s in used if s[1].endswith("Seq Scan"))
            print()

        async with conn.transaction():
            ids = await stage_links(conn, links, batch)
            await show(f"LINKS_SQL ({batch} anonymous ids, {links} links)", LINKS_SQL, ids)
            linked = await stage_identifies(conn, visitors)
            print(f"linking {len(linked)} anonymous visitors: {', '.join(linked)}\n")
            pending = await conn.fetchval(PENDING_IDS_SQL)
            await show("LOCK_PROFILES_SQL", LOCK_PROFILES_SQL, pending)
            await show("MERGE_SQL", MERGE_SQL, pending)
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()
    if bad:
        print(f"sequential scans of stored tables remain: {sorted(set(bad))}")
        return 1
    print("no sequential scan of a stored table")
    return 0


class _Rollback(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=5)
    parser.add_argument("--links", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    with postgres_url() as url:
        sys.exit(asyncio.run(run(url, args.visitors, args.links, args.batch)))


if __name__ == "__main__":
    main()
