"""PostgreSQL for local runs, tests and benchmarks: `DATABASE_URL`, or an embedded server.

The embedded server comes from the `pgserver` package (a PostgreSQL that pip installs), listens
on a Unix socket inside its data folder, and is stopped when the context exits.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def embedded_postgres(data_dir: Path | None = None) -> Iterator[Any]:
    """A running `pgserver` server with its data in `data_dir` (a throwaway folder if None)."""
    import pgserver

    with tempfile.TemporaryDirectory(prefix="clickstream-pg-") as scratch:
        server = pgserver.get_server(data_dir or scratch, cleanup_mode="stop")
        try:
            yield server
        finally:
            server.cleanup()


@contextmanager
def postgres_url(
    data_dir: Path | None = None, env: Mapping[str, str] = os.environ
) -> Iterator[str]:
    """`DATABASE_URL` when set, else the URL of an embedded server (see `embedded_postgres`)."""
    url = env.get("DATABASE_URL")
    if url:
        yield url
        return
    with embedded_postgres(data_dir) as server:
        yield server.get_uri()


def restart_embedded(server: Any, down_s: float = 0.0) -> None:
    """Stop an embedded server (fast: connections are cut), wait, and start it again with the
    options it recorded (port, socket folder). For fault tests."""
    from pgserver import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    time.sleep(down_s)
    pg_ctl(
        ["-w", "-l", str(server.pgdata / "log"), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
    )
