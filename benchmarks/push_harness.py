"""The pipeline behind the gateway, as processes, for the push and recovery benchmarks.

A Pub/Sub emulator (Google's or the built-in one), a fresh PostgreSQL database (on the server of
DATABASE_URL, else a throwaway pgserver), and the processor in either topology: the
streaming-pull worker (`clickstream processor`) or Pub/Sub pushing into N function instances
(`clickstream function`). Messages are gateway envelopes of the shopper model
(benchmarks/processor_workload.py: sessions, carts, purchases and sign-ins).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from google.pubsub_v1 import PubsubMessage
from processor_workload import shopper_batches

from clickstream.emulators.launch import start_pubsub_emulator, stop_process
from clickstream.local_postgres import postgres_url
from clickstream.pubsub_admin import ensure_topology
from clickstream.push import CONCURRENCY, start_function
from clickstream_contract.config import Settings
from gateway.pubsub import publisher_async_client
from processor.core import Message


def workload(events: int, per_message: int, seed: int = 1) -> list[Message]:
    """`events` shopper events in envelopes of `per_message` (as the gateway packs them)."""
    return next(shopper_batches(events, per_message=per_message, seed=seed))


@dataclass
class Pipeline:
    settings: Settings
    logs: Path
    topology: str  # "pull" or "push"
    instances: int = 1
    concurrency: int = CONCURRENCY  # pushes one instance handles at once
    processor: subprocess.Popen[bytes] | None = None
    push_url: str = ""
    publisher: object = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            "GOOGLE_CLOUD_PROJECT": self.settings.project,
            "PUBSUB_EMULATOR_HOST": self.settings.pubsub_emulator_host or "",
            "DATABASE_URL": self.settings.database_url or "",
            "CLICKSTREAM_BIGQUERY": "off",
        }

    def start_processor(self) -> None:
        log = self.logs / f"processor-{self.topology}.log"
        if self.topology == "push":
            self.processor, url = start_function(
                self.env, self.instances, log, concurrency=self.concurrency
            )
            if self.push_url and url != self.push_url:
                raise RuntimeError("restarted on another port")
            self.push_url = url
            return
        with log.open("ab") as out:
            self.processor = subprocess.Popen(
                [sys.executable, "-m", "clickstream_contract.cli", "processor"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def instance_pids(self) -> list[int]:
        """The function's instances (gunicorn's workers), or the pull worker itself."""
        assert self.processor is not None
        if self.topology == "pull":
            return [self.processor.pid]
        children = Path(f"/proc/{self.processor.pid}/task/{self.processor.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    async def publish(self, messages: list[Message], rate: float | None = None) -> None:
        """Publish in requests of 100 messages, at `rate` messages per second when given."""
        client = self.publisher
        assert client is not None
        topic = self.settings.topic_path(self.settings.events_topic)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for start in range(0, len(messages), 100):
            if rate:
                await asyncio.sleep(max(0.0, started + start / rate - loop.time()))
            chunk = messages[start : start + 100]
            await client.publish(  # type: ignore[attr-defined]
                topic=topic,
                messages=[PubsubMessage(data=m.data, attributes=m.attributes) for m in chunk],
            )


@contextlib.asynccontextmanager
async def pipeline(
    emulator: str,
    topology: str,
    instances: int,
    database_url: str,
    logs: Path,
    *,
    start: bool = True,
) -> AsyncIterator[Pipeline]:
    """Emulator up, topics created, and the processor started unless `start` is false (then
    the subscriptions pull, and nothing consumes them until `start_processor` and, for push,
    `ensure_topology(settings, push_url)`); everything stopped afterwards."""
    from processor.migrations import migrate

    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    project = f"bench-{uuid.uuid4().hex[:8]}"
    proc, host = await asyncio.to_thread(
        start_pubsub_emulator,
        emulator,
        logs / f"pubsub-{emulator}.log",
        env={"GOOGLE_CLOUD_PROJECT": project},
    )
    settings = Settings(project=project, pubsub_emulator_host=host, database_url=database_url)
    bench = Pipeline(settings, logs, topology, instances)
    try:
        await migrate(database_url)
        if not start:
            await ensure_topology(settings)
        elif topology == "push":  # the subscriptions need the function's URL
            bench.start_processor()
            await ensure_topology(settings, bench.push_url)
        else:  # the worker needs the subscriptions
            await ensure_topology(settings)
            bench.start_processor()
        bench.publisher = publisher_async_client(settings)
        yield bench
    finally:
        if bench.processor is not None:
            await asyncio.to_thread(stop_process, bench.processor)
        if bench.publisher is not None:
            await bench.publisher.transport.close()  # type: ignore[attr-defined]
        await asyncio.to_thread(stop_process, proc)


def database_server() -> contextlib.AbstractContextManager[str]:
    """DATABASE_URL's server, else a throwaway pgserver."""
    return postgres_url(None)


async def stored_events(conn: asyncpg.Connection) -> int:
    """Events the sink accepted (its dedup keys)."""
    for table in ("event_ids", "events"):
        if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    return 0


async def counted_events(conn: asyncpg.Connection) -> int:
    """Events the aggregates counted: equal to `stored_events` when each counted once."""
    return int(await conn.fetchval("SELECT coalesce(sum(events), 0) FROM metrics_minute"))


async def wait_until_counted(url: str, expected: int, within: float) -> float | None:
    """Seconds until `expected` events are stored and counted by the aggregates (what the
    dashboard shows), None if not within `within`."""
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        while time.monotonic() - started < within:
            with contextlib.suppress(asyncpg.UndefinedTableError):
                if await stored_events(conn) >= expected and await counted_events(conn) >= expected:
                    return time.monotonic() - started
            await asyncio.sleep(0.1)
        return None
    finally:
        await conn.close()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def machine() -> str:
    """CPUs, and the load others put on them (this benchmark shares the machine)."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs; load average {one:.1f} (1 min), {five:.1f} (5 min) at the end"
