"""`clickstream db migrate|prune` and `clickstream processor`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import timedelta

from processor.options import WorkerOptions


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    database = subparsers.add_parser("db", help="PostgreSQL schema and retention")
    db_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    migrate = db_commands.add_parser(
        "migrate",
        help="apply pending SQL migrations (idempotent)",
        description="Apply processor/migrations/NNN_*.sql not yet recorded in schema_migrations."
        " Uses DATABASE_URL (and CLICKSTREAM_DB_PASSWORD when set).",
    )
    migrate.set_defaults(func=run_migrate)
    prune = db_commands.add_parser(
        "prune",
        help="delete dedup keys and activity rows older than a retention period",
        description="Delete the event ids (dedup keys) and the visitors' activity rows (customer"
        " timelines) received before now minus the period, and idle session state (aggregates,"
        " sessions and customers are kept). Keep it longer than the subscription's message"
        " retention: a message redelivered after its ids were pruned would count again.",
    )
    prune.add_argument("--older-than", required=True, help="e.g. 7d, 36h")
    prune.set_defaults(func=run_prune)

    processor = subparsers.add_parser(
        "processor",
        help="consume Pub/Sub events into PostgreSQL (and BigQuery)",
        description="Streaming-pull worker on the events and events-bad subscriptions."
        " Environment: DATABASE_URL, CLICKSTREAM_DB_PASSWORD, PUBSUB_EMULATOR_HOST,"
        " GOOGLE_CLOUD_PROJECT, CLICKSTREAM_BIGQUERY=on|off|auto.",
    )
    defaults = WorkerOptions()
    processor.add_argument(
        "--max-batch-events",
        type=int,
        default=defaults.max_batch_events,
        help="events per batch, at most (default %(default)s)",
    )
    processor.add_argument(
        "--max-batch-wait-ms",
        type=float,
        default=defaults.max_batch_wait * 1000,
        help="collect messages this long after the first (default %(default)s)",
    )
    processor.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help="batches in flight (default %(default)s)",
    )
    processor.add_argument(
        "--max-messages",
        type=int,
        default=defaults.max_messages,
        help="flow control: messages held, not yet acked (default %(default)s)",
    )
    processor.add_argument(
        "--retention",
        help="prune dedup keys and timeline rows older than this every hour (e.g. 30d;"
        " default: $CLICKSTREAM_RETENTION, unset: never)",
    )
    processor.set_defaults(func=run_processor)


def configure_logging() -> None:
    """Informational lines and up, for every shell of the processor (the function's too);
    nothing if the host configured logging already."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def run_migrate(args: argparse.Namespace) -> int:
    from clickstream_contract.config import Settings
    from processor.migrations import migrate

    configure_logging()
    try:
        applied = asyncio.run(migrate(Settings.from_env().database_url))
    except ValueError as exc:  # DatabaseConfigError, a misnamed migration file
        print(f"clickstream db migrate: {exc}", file=sys.stderr)
        return 2
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from clickstream_contract.config import Settings
    from processor import db

    try:
        older_than = db.parse_duration(args.older_than)
    except ValueError as exc:
        print(f"--older-than: {exc}", file=sys.stderr)
        return 2

    async def prune() -> dict[str, int]:
        conn = await db.connect(Settings.from_env().database_url)
        try:
            return await db.prune(conn, older_than)
        finally:
            await conn.close()

    counts = asyncio.run(prune())
    print(", ".join(f"{table}: {n} rows deleted" for table, n in counts.items()))
    return 0


def worker_options(args: argparse.Namespace) -> WorkerOptions:
    """The worker's options from the command line and, for the retention, the environment
    (ValueError for a malformed one)."""
    from processor import db

    retention: timedelta | None
    if args.retention:
        try:
            retention = db.parse_duration(args.retention)
        except ValueError as exc:
            raise ValueError(f"--retention: {exc}") from None
    else:
        retention = db.retention_from_env(os.environ)
    return WorkerOptions(
        max_batch_events=args.max_batch_events,
        max_batch_wait=args.max_batch_wait_ms / 1000,
        concurrency=args.concurrency,
        max_messages=args.max_messages,
        retention=retention,
    )


def run_processor(args: argparse.Namespace) -> int:
    from clickstream_contract.config import Settings
    from processor.worker import main

    configure_logging()
    try:
        options = worker_options(args)
    except ValueError as exc:
        print(f"clickstream processor: {exc}", file=sys.stderr)
        return 2
    return main(Settings.from_env(), options)
