"""PostgreSQL for local runs, tests and benchmarks: `DATABASE_URL`, or an embedded server.

The embedded server comes from the `pgserver` package (a PostgreSQL that pip installs), listens
on a Unix socket inside its data folder, and is stopped when the context exits.

pgserver daemonizes the server and stops it when the last process holding it exits cleanly; it
keeps the holders' process ids in the data folder. A holder killed outright (SIGKILL, a closed
terminal) never leaves that list, so the server would outlive every later holder too. The dead
holders are dropped before the server is opened: a server left running is then adopted, and
stopped when this holder exits.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def embedded_postgres(data_dir: Path | None = None) -> Iterator[Any]:
    """A running `pgserver` server with its data in `data_dir` (a throwaway folder if None)."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime folder at import; without XDG_RUNTIME_DIR
        # (containers, CI, ssh sessions) that warns and falls back to /tmp, which serves.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    with tempfile.TemporaryDirectory(prefix="clickstream-pg-") as scratch:
        if data_dir is not None:
            drop_dead_holders(data_dir)
        server = pgserver.get_server(data_dir or scratch, cleanup_mode="stop")
        try:
            yield server
        finally:
            server.cleanup()


def drop_dead_holders(data_dir: Path) -> list[int]:
    """Remove the processes that no longer exist from pgserver's holders of the server in
    `data_dir` (under pgserver's own lock); returns the ones removed."""
    from pgserver.postgres_server import PostgresServer

    holders = data_dir / ".handle_pids.json"
    with PostgresServer._lock:
        try:
            pids = [int(pid) for pid in json.loads(holders.read_text())]
        except (OSError, ValueError, TypeError):
            return []
        dead = [pid for pid in pids if not process_exists(pid)]
        if dead:
            holders.write_text(json.dumps([pid for pid in pids if pid not in dead]))
    return dead


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    return True


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


def stop_embedded(server: Any) -> None:
    """Stop an embedded server fast (connections are cut); `start_embedded` brings it back."""
    from pgserver import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_embedded(server: Any) -> None:
    """Start a stopped embedded server with the options it recorded (port, socket folder)."""
    from pgserver import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(
        ["-w", "-l", str(server.pgdata / "log"), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
    )


def restart_embedded(server: Any, down_s: float = 0.0) -> None:
    """Stop an embedded server, wait, and start it again. For fault tests."""
    stop_embedded(server)
    time.sleep(down_s)
    start_embedded(server)
