"""`clickstream emulator bigquery`: the `bqemulator` package (pinned 1.4.0), run offline.

The emulator serves BigQuery's REST API (tables, queries: google-cloud-bigquery) and the
Storage Write API over gRPC (AppendRows: google-cloud-bigquery-storage). It runs in this
process so its start-up can be adjusted where 1.4.0 assumes internet access:

- Its engine runs `INSTALL spatial` on start and refuses to start when that download fails.
  No `duckdb-extension-spatial` wheel matches DuckDB 2.x, so we load spatial only when it is
  already installed locally, and otherwise start without GEOGRAPHY (which we do not use).
- Its optional format extensions (Avro) would be downloaded too: we turn them off, the same
  switch as `BQEMU_ENABLE_FORMAT_EXTENSIONS=false`.
- It needs numpy at run time without declaring it: checked here with a clear message (numpy
  is in the project's `emulators` extra).
- It copies the whole table into a time-travel snapshot after every write (quadratic time and
  space): only snapshots a query asks for are kept (`skip_automatic_snapshots`).
- It runs everything on one DuckDB connection, which refuses a second caller ("connection is
  busy with another call") instead of waiting: appends are serialized among themselves, not
  with queries. The customer_daily refresh below takes the appends' lock (`APPEND_LOCK`), so
  the two never refuse each other.

The remaining 1.4.0 gaps are the writer's concern and documented in processor/bigquery.py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# grpc.aio runs bqemulator's (synchronous) AppendRows handler on the event loop's default
# executor, one thread per open stream until it ends: Python's default, min(32, CPUs + 4),
# allowed 5 streams at once on 2 cores, and a 6th append waited for one of them to end. Push
# instances each open their own streams, and a stream whose client vanished unnoticed held its
# thread: after a few, every append would wait forever (most likely what CI saw after a fault
# test, when the shared emulator stopped answering appends).
APPEND_THREADS = 64
# The lock bqemulator's append handler holds while it writes to DuckDB (`share_append_lock`).
APPEND_LOCK = threading.RLock()
DEFAULT_REST_PORT = 9050
DEFAULT_GRPC_PORT = 9060
DEFAULT_CUSTOMER_DAILY_EVERY = 60.0


def register_emulator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bigquery",
        help="BigQuery emulator (REST + Storage Write API over gRPC), offline",
        description=(
            "Serve BigQuery's REST API and the Storage Write API locally, then print "
            "BIGQUERY_EMULATOR_HOST and BIGQUERY_STORAGE_EMULATOR_HOST. Port 0 picks a free one."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_REST_PORT, help="REST port (default %(default)s)"
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help="Storage Write API gRPC port (default %(default)s)",
    )
    parser.add_argument(
        "--project",
        default=None,
        help="project used when a request names none (default: GOOGLE_CLOUD_PROJECT or local)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep tables on disk here across restarts (default: in memory)",
    )
    parser.add_argument(
        "--customer-daily-every",
        type=float,
        default=DEFAULT_CUSTOMER_DAILY_EVERY,
        help="seconds between refreshes of customer_daily, which BigQuery's scheduled query "
        "does in production; 0 never refreshes (default %(default)s)",
    )
    parser.set_defaults(func=run_bigquery)


def run_bigquery(args: argparse.Namespace) -> int:
    from clickstream_contract.config import Settings

    if importlib.util.find_spec("numpy") is None:
        raise SystemExit("the BigQuery emulator needs numpy: pip install 'clickstream[local]'")
    project = args.project or Settings.from_env().project
    asyncio.run(
        serve(
            args.host,
            args.port,
            args.grpc_port,
            project,
            args.data_dir,
            args.customer_daily_every,
        )
    )
    return 0


def emulator_settings(
    host: str, rest_port: int, grpc_port: int, project: str, data_dir: Path | None
) -> Any:
    from bqemulator.config import LogLevel, PersistenceMode
    from bqemulator.config import Settings as EmulatorSettings

    return EmulatorSettings(
        rest_host=host,
        rest_port=rest_port,
        grpc_host=host,
        grpc_port=grpc_port,
        default_project_id=project,
        persistence_mode=(
            PersistenceMode.EPHEMERAL if data_dir is None else PersistenceMode.PERSISTENT
        ),
        data_dir=data_dir,
        enable_format_extensions=False,  # would download DuckDB's avro extension
        log_level=LogLevel.WARNING,
    )


def load_spatial_if_installed(engine: Any) -> None:
    """Replacement for DuckDBEngine._load_spatial that never reaches for the network."""
    connection = engine.connection
    # Queries must not trigger downloads either.
    connection.execute("SET autoinstall_known_extensions = false")
    # fetchall: DuckDB 2 refuses further work on a connection with an unfinished result.
    rows = connection.execute(
        "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'spatial'"
    ).fetchall()
    if rows and rows[0][0]:
        connection.execute("LOAD spatial")


def skip_automatic_snapshots() -> None:
    """Keep only the snapshots a query asks for (`CREATE SNAPSHOT TABLE`).

    After every write, bqemulator 1.4.0 copies the whole table into a time-travel snapshot
    and keeps it for 7 days: each append costs as much as the table so far, and the copies fill
    memory or the data folder (77 MB after the first 4,000 events of `clickstream up`). Nothing
    here queries `FOR SYSTEM_TIME AS OF`, which finds no snapshot now and reads the table as it
    is.
    """
    from bqemulator.versioning.snapshots import SnapshotManager

    capture = SnapshotManager.capture

    def capture_requested_only(
        self: Any, project_id: str, dataset_id: str, table_id: str, *, kind: str = "AUTO"
    ) -> Any:
        if kind == "AUTO":
            return None
        return capture(self, project_id, dataset_id, table_id, kind=kind)

    SnapshotManager.capture = capture_requested_only  # type: ignore[method-assign]


def share_append_lock() -> None:
    """Make the lock bqemulator 1.4.0's append handler creates for itself `APPEND_LOCK`."""
    from bqemulator.grpc_api import write_servicer

    write_servicer.RLock = lambda: APPEND_LOCK  # type: ignore[assignment]


async def serve(
    host: str,
    rest_port: int,
    grpc_port: int,
    project: str,
    data_dir: Path | None,
    customer_daily_every: float = 0,
) -> None:
    from bqemulator.observability.logging_ import configure_logging

    settings = emulator_settings(host, rest_port, grpc_port, project, data_dir)
    # Before the server's modules are imported: some log at import time.
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    from bqemulator.server import EmulatorServer
    from bqemulator.storage.engine import DuckDBEngine

    DuckDBEngine._load_spatial = load_spatial_if_installed  # type: ignore[method-assign, assignment]
    skip_automatic_snapshots()
    share_append_lock()
    server = EmulatorServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(APPEND_THREADS, thread_name_prefix="bqemulator"))
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    refresher: asyncio.Task[None] | None = None
    try:
        # Test fixtures and `clickstream up` read these two lines to learn the bound ports.
        print(f"BIGQUERY_EMULATOR_HOST={server.rest_url}", flush=True)
        print(f"BIGQUERY_STORAGE_EMULATOR_HOST={server.grpc_endpoint}", flush=True)
        if customer_daily_every > 0:
            from clickstream.emulators.scheduled_queries import refresh_customer_daily_every

            refreshes = refresh_customer_daily_every(
                customer_daily_every, server.rest_url, project, APPEND_LOCK
            )
            refresher = asyncio.create_task(refreshes)
        await stop.wait()
    finally:
        if refresher is not None:
            refresher.cancel()
        await server.stop()


def start_in_subprocess(
    log_path: Path,
    timeout: float = 90.0,
    data_dir: Path | None = None,
    customer_daily_every: float = 0,
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """Run `clickstream emulator bigquery` on free ports; return it and its two host variables.

    For tests and benchmarks. Output goes to `log_path` (a pipe left unread would fill up and
    stall the emulator); tables stay in memory unless `data_dir` is given. customer_daily is
    refreshed only every `customer_daily_every` seconds if given (tests refresh it themselves).
    The caller stops the process (SIGTERM).
    """
    from clickstream.emulators.launch import stop_process

    command = [sys.executable, "-m", "clickstream_contract.cli", "emulator", "bigquery"]
    command += ["--customer-daily-every", str(customer_daily_every)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--port", "0", "--grpc-port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        lines = log_path.read_text(errors="replace").splitlines()
        hosts = dict(line.split("=", 1) for line in lines if line.startswith("BIGQUERY_"))
        if len(hosts) == 2:
            return proc, hosts
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"BigQuery emulator did not start: {log_path.read_text()}")
        time.sleep(0.2)
