"""The identity merge's query plan on a seeded database: which scans each table gets.

    DATABASE_URL=... .venv/bin/python benchmarks/identity_merge_plan.py [--visitors 5]
        [--links 200000] [--batch 20000]

Against a database filled by `clickstream dashboard seed` (any size; the point is the plan on
big tables). In one transaction that is rolled back: stages an `identify` event for each of
the `--visitors` anonymous visitors with the most events (linking them to new user ids) and
records the links as the sink does (`RECORD_LINKS_SQL`), then runs `EXPLAIN (ANALYZE,
BUFFERS)` of the merge script (`processor.identities.MERGE_SQL`) as `merge_pending` runs it,
and of the attribution (`ATTRIBUTE_SQL`, which every batch runs) with `--links` other links
stored and a batch of `--batch` anonymous events (copies of stored ones). Prints the plans and,
per table, the scans used; exits 1 if a sequential scan of a stored (not temporary) table
remains.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

import asyncpg

from clickstream.local_postgres import postgres_url
from processor.identities import ATTRIBUTE_SQL, LINK_EVENT_TYPES, MERGE_SQL, RECORD_LINKS_SQL
from processor.postgres import SETUP_SQL

_SCAN = re.compile(
    r"(?<!Bitmap )((?:Parallel )?(?:Seq|Index Only|Index|Bitmap Heap) Scan)"
    r"(?: using (\S+))? on (\w+)"
)
# Temp tables of the sink's connection: one batch each, scanned whole by design.
_BATCH_TABLES = {"incoming", "new_sessions"}


async def stage_batch(conn: asyncpg.Connection, links: int, batch: int) -> None:
    """`links` links of other ids (statistics refreshed, as autovacuum keeps them) and a batch
    of `batch` anonymous events in `incoming`, half of them of linked ids."""
    await conn.execute(
        """INSERT INTO identities (anonymous_id, user_id, linked_at, merged_at)
           SELECT 'linked-' || n, 'user-' || n, now(), now() FROM generate_series(1, $1) n
           ON CONFLICT DO NOTHING""",
        links,
    )
    await conn.execute("ANALYZE identities")
    await conn.execute(
        """INSERT INTO incoming (event_id, event_type, occurred_at, received_at, source,
                                 visitor_key, anonymous_id, session_id, referrer_class,
                                 device_type, is_bot)
           SELECT gen_random_uuid(), event_type, occurred_at, received_at, source, a, a,
                  session_id, referrer_class, device_type, is_bot
           FROM (SELECT e.*, CASE WHEN n % 2 = 0 THEN 'linked-' || (n * 7 % greatest($2, 1))
                                  ELSE visitor_key END AS a
                 FROM (SELECT *, row_number() OVER () AS n FROM events LIMIT $1) e) b""",
        batch,
        links,
    )


async def stage_identifies(conn: asyncpg.Connection, visitors: int) -> list[str]:
    """An identify event per anonymous visitor (most events first) in `incoming` and in
    `events`, as the sink has them when the merge runs."""
    anonymous = [
        row[0]
        for row in await conn.fetch(
            """SELECT e.visitor_key FROM events e JOIN customers c USING (visitor_key)
               WHERE c.user_id IS NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT $1""",
            visitors,
        )
    ]
    await conn.execute(
        f"""INSERT INTO incoming (event_id, event_type, occurred_at, received_at, source,
                                 visitor_key, anonymous_id, user_id, session_id,
                                 referrer_class, device_type, is_bot)
            SELECT gen_random_uuid(), '{LINK_EVENT_TYPES[0]}', now(), now(), 'web',
                   'merge-user-' || a, a, 'merge-user-' || a, 'merge-session-' || a,
                   'direct', 'desktop', false
            FROM unnest($1::text[]) a""",
        anonymous,
    )
    await conn.execute("INSERT INTO events SELECT * FROM fresh")
    return anonymous


def scans(plan: str) -> list[tuple[str, str, str]]:
    return [(m[3], m[1], m[2] or "") for m in _SCAN.finditer(plan)]


async def explain(conn: asyncpg.Connection, sql: str) -> str:
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")
    return "\n".join(row[0] for row in rows)


async def run(database_url: str, visitors: int, links: int, batch: int) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SETUP_SQL)
        sizes: dict[str, int] = dict(
            (row[0], row[1])
            for row in await conn.fetch(
                "SELECT relname, n_live_tup FROM pg_stat_user_tables"
                " WHERE relname IN ('events', 'visitor_minutes', 'visitor_hours', 'visitor_days',"
                " 'sessions', 'customers', 'metrics_minute', 'identities')"
            )
        )
        print("table sizes:", ", ".join(f"{k} {v:,}" for k, v in sorted(sizes.items())))
        bad: list[tuple[str, str, str]] = []

        async def show(name: str, sql: str) -> None:
            plan = await explain(conn, sql)
            print(f"--- {name}\n{plan}\n\nscans in {name}:")
            used = scans(plan)
            for table, kind, index in sorted(set(used)):
                print(f"  {table:18} {kind}{' using ' + index if index else ''}")
            bad.extend(s for s in used if s[1].endswith("Seq Scan") and s[0] not in _BATCH_TABLES)
            print()

        async with conn.transaction():
            await stage_batch(conn, links, batch)
            await show(f"ATTRIBUTE_SQL ({batch} events, {links} links)", ATTRIBUTE_SQL)
            await conn.execute("TRUNCATE incoming")
            linked = await stage_identifies(conn, visitors)
            print(f"linking {len(linked)} anonymous visitors: {', '.join(linked)}\n")
            await conn.execute(RECORD_LINKS_SQL)
            await show("MERGE_SQL", MERGE_SQL)
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
