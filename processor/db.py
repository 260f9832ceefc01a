"""PostgreSQL access shared by the processor's shells: connections and retention.

How `DATABASE_URL` and the password secret become connection options is shared with the
dashboard (`clickstream_contract.config.connect_options`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from clickstream_contract.config import connect_options

log = logging.getLogger(__name__)

# A plain connection or one borrowed from a pool.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


async def connect(database_url: str | None) -> asyncpg.Connection:
    return await asyncpg.connect(**connect_options(database_url))


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `7d` -> timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"duration {text!r} must be a number followed by s, m, h or d (e.g. 7d)")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


# How long both shells keep dedup keys and timeline rows (`prune`), e.g. 30d; unset: forever.
# Terraform sets it for the function from var.retention_days.
RETENTION_ENV = "CLICKSTREAM_RETENTION"


def retention_from_env(env: Mapping[str, str]) -> timedelta | None:
    """`RETENTION_ENV` as a duration, None when unset (ValueError names it when malformed)."""
    text = env.get(RETENTION_ENV)
    if not text:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{RETENTION_ENV}: {exc}") from None


# Retention: (table, key, age column). Session state first, as the sink locks it first.
_PRUNED = (
    ("session_state", "anonymous_id", "last_seen_at"),
    ("event_ids", "event_id", "received_at"),
    ("visitor_activity", "ctid", "received_at"),
)


async def prune(conn: Connection, older_than: timedelta) -> dict[str, int]:
    """Delete dedup keys and activity rows (by server receive time) and idle session state older
    than `older_than`.

    Aggregates, sessions and customers are kept. The retention must exceed the Pub/Sub
    subscription's message retention: a message redelivered after its event ids were pruned
    would count its events again.

    Each table is pruned in a statement of its own, and rows that a writer holds locked (a
    batch's session state, activity rows that an identity merge is moving) are skipped, to go next
    time: prune never waits on a batch, so it can never deadlock with one.
    """
    counts: dict[str, int] = {}
    for table, key, column in _PRUNED:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table}"
            f" WHERE {column} < now() - $1::interval FOR UPDATE SKIP LOCKED)",
            older_than,
        )
        counts[table] = int(status.split()[-1])
    return counts


async def prune_periodically(pool: Any, retention: timedelta, every: float) -> None:
    """`prune` now and every `every` seconds, on a connection of the shell's pool. Several
    processes (function instances, workers) may prune at once: each skips what another holds."""
    while True:
        try:
            async with pool.acquire() as conn:
                counts = await prune(conn, retention)
            log.info("pruned %s", counts)
        except Exception:
            log.exception("pruning failed; trying again later")
        await asyncio.sleep(every)
