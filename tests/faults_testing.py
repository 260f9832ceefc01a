"""The whole pipeline as real processes, for fault scenarios and the soak run.

gateway (Granian) -> Pub/Sub emulator -> processor -> PostgreSQL + BigQuery emulator, driven by
`clickstream loadgen --ids-file` and reconciled with `clickstream.audit`.

Pub/Sub and BigQuery's Storage Write endpoint are reached through `TcpProxy`s the test
controls. Taking an endpoint down means the proxy stops listening and resets every open
connection: clients see what they see when a managed service (or the network to it) is down,
while the emulator behind it keeps its state, as the real, durable service does. (Restarting
the built-in emulator instead would lose its in-memory backlog, which is not a failure the real
service has.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from gateway_server import (
    GATEWAY_COMMAND,
    WRITE_KEYS,
    create_topology,
    free_port,
    stop,
    wait_ready,
)
from gateway_server import GatewayProcess as Gateway
from processor_testing import aggregate_mismatches

from clickstream.audit import Report, audit
from clickstream.local_postgres import embedded_postgres
from clickstream_contract.config import Settings

CLI = (sys.executable, "-m", "clickstream_contract.cli")
WRITE_KEY = "test-key"


class TcpProxy:
    """A loopback TCP forwarder with an off switch, on its own thread and event loop."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._listen())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def _down(self) -> None:
        assert self.server is not None
        self.server.close()  # refuse new connections
        for writer in list(self.writers):  # and reset the open ones
            transport = writer.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    def stop_endpoint(self) -> None:
        self._call(self._down())

    def start_endpoint(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@contextlib.contextmanager
def own_postgres() -> Iterator[tuple[Any, str]]:
    """A PostgreSQL server of the test's own, which it may stop and start: (server, url)."""
    with embedded_postgres() as server:
        yield server, server.get_uri()


@dataclass
class Loadgen:
    proc: subprocess.Popen[bytes]
    ids_file: Path
    out_path: Path

    def wait(self, timeout: float = 180) -> dict[str, Any]:
        """The loadgen's JSON summary once it has finished."""
        self.proc.wait(timeout=timeout)
        out = self.out_path.read_text()
        match = re.search(r"^\{.*^\}", out, re.S | re.M)
        assert match, f"loadgen printed no summary: {out[-2000:]}"
        summary: dict[str, Any] = json.loads(match.group(0))
        return summary


@dataclass
class Reconciliation:
    report: Report
    extra_events: int  # rows in `events` whose id the gateway never accepted
    mismatches: dict[str, Any]  # aggregates that differ from a recount

    def summary(self) -> dict[str, Any]:
        return {
            **self.report.summary(),
            "extra_events": self.extra_events,
            "aggregate_mismatches": self.mismatches,
        }


@dataclass
class Pipeline:
    """The running pieces of one scenario; each can be stopped, killed and started again."""

    settings: Settings
    env: dict[str, str]
    log_dir: Path
    pubsub: TcpProxy
    bigquery: TcpProxy
    gateway_port: int = field(default_factory=free_port)
    gateway: Gateway | None = None
    processor: subprocess.Popen[bytes] | None = None
    loadgens: list[Loadgen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start_gateway(self, workers: int = 1) -> Gateway:
        log_path = self.log_dir / "gateway.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*GATEWAY_COMMAND, "--port", str(self.gateway_port), "--workers", str(workers)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.gateway = Gateway(self.url, proc, self.settings, log_path)
        wait_ready(self.gateway)
        return self.gateway

    def start_processor(self) -> subprocess.Popen[bytes]:
        with (self.log_dir / "processor.log").open("ab") as log:
            self.processor = subprocess.Popen(
                [*CLI, "processor", "--max-batch-events", "500", "--max-batch-wait-ms", "20"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.processor

    def processor_log(self) -> str:
        return (self.log_dir / "processor.log").read_text(errors="replace")

    def loadgen(
        self, *, rate: float, duration: float, batch_size: int = 5, invalid_share: float = 0.02
    ) -> Loadgen:
        n = len(self.loadgens)
        ids_file = self.log_dir / f"ids-{n}.txt"
        out_path = self.log_dir / f"loadgen-{n}.out"
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                [*CLI, "loadgen", "--url", self.url, "--write-key", WRITE_KEY,
                 "--rate", str(rate), "--duration", str(duration),
                 "--batch-size", str(batch_size), "--concurrency", "16",
                 "--invalid-share", str(invalid_share), "--seed", str(n + 1),
                 "--ids-file", str(ids_file), "--json", "--quiet"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        loadgen = Loadgen(proc, ids_file, out_path)
        self.loadgens.append(loadgen)
        return loadgen

    async def reconcile(self, ids_file: Path, within: float = 90) -> Reconciliation:
        """Audit until every accepted id is accounted for (or `within` runs out), then check
        that PostgreSQL holds nothing else and its aggregates equal a recount."""
        deadline = time.monotonic() + within
        while True:
            # A query bqemulator refuses as busy is asked again by the audit itself.
            report = await audit(ids_file, self.settings)
            if report.ok or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            extra = await conn.fetchval(
                "SELECT count(*) FROM event_ids WHERE NOT (event_id = ANY($1::uuid[]))",
                list(report.unique),
            )
            mismatches = await aggregate_mismatches(conn)
        finally:
            await conn.close()
        return Reconciliation(report, extra, mismatches)

    def stop_all(self) -> None:
        for loadgen in self.loadgens:
            if loadgen.proc.poll() is None:
                loadgen.proc.kill()
                loadgen.proc.wait()
        if self.gateway is not None:
            stop(self.gateway.proc)
        if self.processor is not None:
            stop(self.processor)


@contextlib.contextmanager
def pipeline(
    *,
    pubsub_host: str,
    bigquery_hosts: Mapping[str, str],
    database_url: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[Pipeline]:
    """Gateway and processor running against proxied emulators; everything stopped at exit."""
    project = f"faults-{uuid.uuid4().hex[:10]}"
    pubsub = TcpProxy(pubsub_host)
    bigquery = TcpProxy(bigquery_hosts["BIGQUERY_STORAGE_EMULATOR_HOST"])
    full_env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": project,
        "PUBSUB_EMULATOR_HOST": pubsub.address,
        "BIGQUERY_EMULATOR_HOST": bigquery_hosts["BIGQUERY_EMULATOR_HOST"],
        "BIGQUERY_STORAGE_EMULATOR_HOST": bigquery.address,
        "CLICKSTREAM_BIGQUERY": "on",
        "CLICKSTREAM_BIGQUERY_DATASET": f"faults_{uuid.uuid4().hex[:10]}",
        "DATABASE_URL": database_url,
        "CLICKSTREAM_WRITE_KEYS": WRITE_KEYS,
        **(env or {}),
    }
    running = Pipeline(Settings.from_env(full_env), full_env, log_dir, pubsub, bigquery)
    try:
        create_topology(running.settings)
        # As before a deployment: the processor checks the schema, it does not migrate.
        subprocess.run([*CLI, "db", "migrate"], env=full_env, check=True, capture_output=True)
        running.start_gateway()
        running.start_processor()
        yield running
    finally:
        running.stop_all()
        pubsub.close()
        bigquery.close()


async def wait_until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def events_stored(database_url: str) -> int:
    """Rows in `events` (0 until the processor has migrated the database)."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM event_ids"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def readiness(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            return (await client.get(f"{url}/readyz")).status_code
        except httpx.HTTPError:
            return 0


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (Granian workers), from /proc."""
    total = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def send_signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
