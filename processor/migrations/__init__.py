"""Versioned SQL migrations (`NNN_name.sql` in this folder), applied by `clickstream db migrate`.

Each file runs once, in its own transaction, and is recorded in `schema_migrations`. An
advisory lock makes concurrent starters (several workers, `clickstream up`, a function cold
start) wait for each other instead of racing to create the same tables. Applied files are never
edited: a change is a new file. The deployed processor only checks that they are applied
(`require_migrated`): its role cannot change the schema.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Final

from processor.db import Connection, connect

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).parent
# Arbitrary constant: the key of the advisory lock that serializes concurrent migrators.
LOCK_KEY: Final = 0x636C6B73  # "clks"
_NAME: Final = re.compile(r"\d{3}_[a-z0-9_]+\.sql")


def migration_files() -> list[Path]:
    """The migration files in version order; a misnamed file is an error, not skipped."""
    files = sorted(MIGRATIONS_DIR.glob("*.sql"))
    for path in files:
        if not _NAME.fullmatch(path.name):
            raise ValueError(f"migration file name {path.name!r} is not NNN_name.sql")
    return files


async def apply_migrations(conn: Connection) -> list[str]:
    """Apply every migration not applied yet; return the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        applied = {row["version"] for row in rows}
        done: list[str] = []
        for path in migration_files():
            version = path.stem
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("applied migration %s", version)
            done.append(version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


class SchemaNotMigratedError(RuntimeError):
    """The database lacks migrations this code expects; its role may not apply them itself."""


async def check_migrated(conn: Connection) -> None:
    """Raise `SchemaNotMigratedError` unless every migration file is recorded as applied.

    The deployed processor writes with a role that cannot change the schema (migration
    302_processor_writer), so it checks at start instead of migrating."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    rows = await conn.fetch("SELECT version FROM schema_migrations") if exists else []
    missing = [p.stem for p in migration_files() if p.stem not in {r["version"] for r in rows}]
    if missing:
        span = missing[0] if len(missing) == 1 else f"{missing[0]} to {missing[-1]}"
        raise SchemaNotMigratedError(
            f"the database lacks {len(missing)} migration(s), {span}: run `clickstream db migrate`"
        )


async def require_migrated(database_url: str | None) -> None:
    """Connect with `DATABASE_URL` (+ `CLICKSTREAM_DB_PASSWORD`) and `check_migrated`."""
    conn = await connect(database_url)
    try:
        await check_migrated(conn)
    finally:
        await conn.close()


async def migrate(database_url: str | None) -> list[str]:
    """Connect with `DATABASE_URL` (+ `CLICKSTREAM_DB_PASSWORD`) and apply migrations."""
    conn = await connect(database_url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
