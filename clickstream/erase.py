"""`clickstream erase --user-id ID`: delete one person's data (erasure requests, GDPR Art. 17).

A person is their `user_id` plus every `anonymous_id` linked to it (identities, customer
profiles, events carrying both). PostgreSQL: their activity (the timeline's events), sessions
and funnel steps, session state, profile, identity links, per-visitor presence rows, and bad
events whose raw payload names them, in one transaction, after applying the aggregate deltas
the processor committed (so those are erased too). BigQuery: their rows in `events`,
`bad_events` and `customer_daily` (a table whose scheduled refresh rewrites recent days only,
so older days are erased here; the views `events_dedup` and `customer_analytics` follow).
Aggregates without identifiers (per-minute counts, products, traffic) are kept. Idempotent:
run it again until BigQuery reports 0 rows (it refuses DML on rows still in the streaming
buffer). See docs/erasure.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from clickstream_contract.config import Settings


@dataclass
class Erased:
    user_id: str
    anonymous_ids: list[str]
    postgres: dict[str, int] = field(default_factory=dict)
    bigquery: dict[str, int] | None = None


def raw_pattern(user_id: str, anonymous_ids: list[str]) -> str:
    """A POSIX/RE2 regex matching `"user_id": "ID"` or `"anonymous_id": "A"` in raw JSON."""
    values = "|".join(re.escape(v) for v in [user_id, *anonymous_ids])
    return rf'"(user_id|userId|anonymous_id|anonymousId)"\s*:\s*"({values})"'


# Each statement deletes one table's rows for ($1 user_id, $2 visitor keys, $3 anonymous ids,
# $4 raw-payload regex); funnel steps go before the sessions they point at.
POSTGRES_DELETES: dict[str, str] = {
    "funnel_steps": """DELETE FROM funnel_steps WHERE session_id IN
        (SELECT session_id FROM sessions WHERE visitor_key = ANY($2) OR user_id = $1
         OR anonymous_id = ANY($3))""",
    "sessions": """DELETE FROM sessions
        WHERE visitor_key = ANY($2) OR user_id = $1 OR anonymous_id = ANY($3)""",
    "visitor_activity": "DELETE FROM visitor_activity WHERE visitor_key = ANY($2)",
    "session_state": "DELETE FROM session_state WHERE anonymous_id = ANY($3)",
    "customers": "DELETE FROM customers WHERE visitor_key = ANY($2) OR user_id = $1",
    "identities": "DELETE FROM identities WHERE user_id = $1 OR anonymous_id = ANY($3)",
    "visitor_minutes": "DELETE FROM visitor_minutes WHERE visitor_key = ANY($2)",
    "visitor_hours": "DELETE FROM visitor_hours WHERE visitor_key = ANY($2)",
    "visitor_days": "DELETE FROM visitor_days WHERE visitor_key = ANY($2)",
    "bad_events": "DELETE FROM bad_events WHERE encode(raw, 'escape') ~ $4",
}


def renumbered(sql: str) -> tuple[str, list[int]]:
    """Only the parameters a statement uses, numbered from $1 (PostgreSQL must be able to type
    each parameter it is given): (the statement, the original numbers in order)."""
    used = sorted({int(n) for n in re.findall(r"\$(\d)", sql)})
    return re.sub(r"\$(\d)", lambda m: f"${used.index(int(m[1])) + 1}", sql), used


LINKED_ANONYMOUS_IDS = """
SELECT anonymous_id FROM identities WHERE user_id = $1
UNION SELECT unnest(anonymous_ids) FROM customers WHERE user_id = $1 OR visitor_key = $1
UNION SELECT e.anonymous_id
      FROM visitor_activity, json_to_recordset(events) AS e(anonymous_id text)
      WHERE visitor_key = $1 AND e.anonymous_id IS NOT NULL
"""


async def linked_anonymous_ids(conn: Any, user_id: str) -> list[str]:
    import asyncpg

    found: set[str] = set()
    for part in LINKED_ANONYMOUS_IDS.strip().split("\nUNION "):
        try:
            found |= {row[0] for row in await conn.fetch(part, user_id) if row[0]}
        except asyncpg.UndefinedTableError:  # an older schema without that table
            continue
    return sorted(found)


async def erase_postgres(database_url: str | None, user_id: str, dry_run: bool) -> Erased:
    from processor.db import connect
    from processor.postgres import apply_pending

    conn = await connect(database_url)
    try:
        await apply_pending(conn, math.inf)  # what the processor committed, not applied yet
        async with conn.transaction():
            anonymous = await linked_anonymous_ids(conn, user_id)
            erased = Erased(user_id, anonymous)
            args = (user_id, [user_id, *anonymous], anonymous, raw_pattern(user_id, anonymous))
            for table, sql in POSTGRES_DELETES.items():
                if await conn.fetchval("SELECT to_regclass($1)", table) is None:
                    continue
                numbered, used = renumbered(sql)
                status = await conn.execute(numbered, *(args[i - 1] for i in used))
                erased.postgres[table] = int(status.split()[-1])
            if dry_run:
                raise _DryRun(erased)
    except _DryRun as done:
        return done.erased
    finally:
        await conn.close()
    return erased


class _DryRun(Exception):
    """Rolls the transaction back after counting."""

    def __init__(self, erased: Erased) -> None:
        self.erased = erased


def erase_bigquery(settings: Settings, erased: Erased, dry_run: bool) -> dict[str, int]:
    from google.cloud import bigquery

    from processor.bigquery_schema import BAD_EVENTS, CUSTOMER_DAILY, EVENTS, bigquery_client

    client = bigquery_client(settings)
    dataset = f"{settings.project}.{settings.bigquery_dataset}"
    params = [
        bigquery.ScalarQueryParameter("user_id", "STRING", erased.user_id),
        bigquery.ArrayQueryParameter("anonymous_ids", "STRING", erased.anonymous_ids),
        bigquery.ScalarQueryParameter(
            "pattern", "STRING", raw_pattern(erased.user_id, erased.anonymous_ids)
        ),
    ]
    where = {
        EVENTS: "user_id = @user_id OR visitor_key = @user_id "
        "OR anonymous_id IN UNNEST(@anonymous_ids)",
        BAD_EVENTS: "REGEXP_CONTAINS(SAFE_CONVERT_BYTES_TO_STRING(raw), @pattern)",
        CUSTOMER_DAILY: "visitor_key = @user_id OR user_id = @user_id "
        "OR visitor_key IN UNNEST(@anonymous_ids)",
    }
    counts = {}
    try:
        for table, condition in where.items():
            verb = "SELECT COUNT(*) AS n FROM" if dry_run else "DELETE FROM"
            job = client.query(
                f"{verb} `{dataset}.{table}` WHERE {condition}",
                job_config=bigquery.QueryJobConfig(query_parameters=params),
            )
            rows = list(job.result())
            counts[table] = int(rows[0]["n"]) if dry_run else int(job.num_dml_affected_rows or 0)
    finally:
        client.close()
    return counts


async def erase(settings: Settings, user_id: str, *, dry_run: bool, bigquery: bool) -> Erased:
    from clickstream.audit import bigquery_skip_reason

    erased = await erase_postgres(settings.database_url, user_id, dry_run)
    if bigquery and bigquery_skip_reason(settings) is None:
        erased.bigquery = await asyncio.to_thread(erase_bigquery, settings, erased, dry_run)
    return erased


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="delete one person's data from PostgreSQL and BigQuery (erasure requests)",
        description="Delete everything stored about a user_id and the anonymous ids linked to "
        "it. DATABASE_URL for PostgreSQL; BigQuery when BIGQUERY_EMULATOR_HOST or "
        "GOOGLE_CLOUD_PROJECT is set (unset variables come from the local stack when one "
        "runs). Prints what was deleted as JSON. See docs/erasure.md.",
    )
    parser.add_argument("--user-id", required=True, help="the person's user_id")
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
    )
    parser.add_argument("--no-bigquery", action="store_true", help="PostgreSQL only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clickstream.local_state import missing_setting, stack_env

    if not args.user_id.strip():
        raise SystemExit("clickstream erase: --user-id must not be empty")
    settings = Settings.from_env(stack_env())
    if settings.database_url is None:
        raise missing_setting("erase", "DATABASE_URL")
    try:
        erased = asyncio.run(
            erase(settings, args.user_id, dry_run=args.dry_run, bigquery=not args.no_bigquery)
        )
    except OSError as error:  # PostgreSQL or BigQuery unreachable
        raise SystemExit(f"clickstream erase: {error}") from None
    print(json.dumps({"dry_run": args.dry_run, **erased.__dict__}, indent=2))
    return 0
