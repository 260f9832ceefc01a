"""PostgreSQL access shared by the processor's shells: connection options and retention.

Connection: `DATABASE_URL` names the server and may omit the password; Cloud Functions gets the
password from Secret Manager as `CLICKSTREAM_DB_PASSWORD`, which asyncpg then uses (it wins over
one in the URL). The password never appears in logs: only the URL's host and database do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

PASSWORD_ENV = "CLICKSTREAM_DB_PASSWORD"


# A plain connection or one borrowed from a pool.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


class DatabaseConfigError(ValueError):
    pass


def connect_options(
    database_url: str | None, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """asyncpg keyword arguments for `DATABASE_URL` plus the optional password secret."""
    if not database_url:
        raise DatabaseConfigError(
            "DATABASE_URL is not set (e.g. postgresql://clickstream@127.0.0.1:5432/clickstream)"
        )
    options: dict[str, Any] = {"dsn": database_url}
    password = env.get(PASSWORD_ENV)
    if password:
        options["password"] = password
    return options


async def connect(database_url: str | None) -> asyncpg.Connection:
    return await asyncpg.connect(**connect_options(database_url))


def describe(database_url: str) -> str:
    """The URL without credentials, for logs: host (or socket folder), port and database."""
    parts = urlsplit(database_url)
    socket_dir = parse_qs(parts.query).get("host")
    host = socket_dir[0] if socket_dir else parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path}"


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `7d` -> timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"duration {text!r} must be a number followed by s, m, h or d (e.g. 7d)")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


# Retention: (table, key, age column). Session state first, as the sink locks it first.
_PRUNED = (("session_state", "anonymous_id", "last_seen_at"), ("events", "event_id", "received_at"))


async def prune(conn: Connection, older_than: timedelta) -> dict[str, int]:
    """Delete raw events (by server receive time) and idle session state older than `older_than`.

    Aggregates, sessions and customers are kept. The retention must exceed the Pub/Sub
    subscription's message retention: a message redelivered after its events were pruned would
    count them again.

    Each table is pruned in a statement of its own, and rows that a writer holds locked (a
    batch's session state, events that an identity merge is moving) are skipped, to go next
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
