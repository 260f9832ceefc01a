"""Cloud Functions (gen2) shell: one Pub/Sub message per invocation, same core as the worker.

Terraform deploys a root `main.py` that imports `process_pubsub` from here, with the
environment `DATABASE_URL` (no password), `CLICKSTREAM_DB_PASSWORD` (Secret Manager) and the
usual `GOOGLE_CLOUD_PROJECT`. The asyncpg pool and the sinks live on an event loop in a
background thread that outlives invocations; the first invocation of an instance creates them
(after checking that every migration is applied: its database role cannot migrate). A
transient failure raises, so the invocation fails and Pub/Sub retries it (the trigger must have
retries enabled); a message that can never succeed is stored in `bad_events` by the core and
the invocation succeeds.

An instance answers several pushes at once (`max_instance_request_concurrency`), but has only
`POOL_SIZE` connections: the messages of invocations that wait for one are written together,
in one transaction, when one frees up (`Coalescer`), and each invocation answers when its
message's transaction committed and its deltas were applied or left to the session applying
(processor.postgres). One message per transaction spent most of PostgreSQL's time on
per-transaction work (benchmarks/README.md, push).

Many instances write one database, so two invocations' transactions may deadlock or fail to
serialize. Such a conflict is retried here, after a short random wait, a few times before the
invocation fails: a redelivery from Pub/Sub would come only after the subscription's minimum
backoff (10 s). Each conflict is logged ("transaction conflict"), and so is the rare one that
still reaches Pub/Sub, so that a run can count them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import random
import threading
from collections.abc import Coroutine, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import functions_framework
from cloudevents.http import CloudEvent

from clickstream_contract.config import Settings
from processor import db
from processor.cli import configure_logging
from processor.core import Message, Processor
from processor.options import PRUNE_EVERY

log = logging.getLogger(__name__)
T = TypeVar("T")

# What two transactions that touch the same rows in different orders get.
TRANSACTION_CONFLICTS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
CONFLICT_RETRIES = 5
CONFLICT_BACKOFF = 0.05  # seconds, doubled per retry, randomized so the two sides part
POOL_SIZE = 2  # connections per instance: Cloud SQL's connections are shared by all of them
MAX_COALESCED = 64  # messages written in one transaction, at most


class Coalescer:
    """Writes the messages of concurrent invocations in batches, one per free connection."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.queue: asyncio.Queue[tuple[Message, asyncio.Future[None]]] = asyncio.Queue()
        self.slots = asyncio.Semaphore(POOL_SIZE)
        self.collector: asyncio.Task[None] | None = None
        self.writes: set[asyncio.Task[None]] = set()

    async def process(self, message: Message) -> None:
        """Returns once `message` is written; raises what its batch's write raised."""
        if self.collector is None:
            self.collector = asyncio.create_task(self.collect())
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((message, done))
        await done

    async def collect(self) -> None:
        while True:
            batch = [await self.queue.get()]
            await self.slots.acquire()
            # Whatever queued while no connection was free goes along: no added wait.
            while not self.queue.empty() and len(batch) < MAX_COALESCED:
                batch.append(self.queue.get_nowait())
            task = asyncio.create_task(self.write(batch))
            self.writes.add(task)
            task.add_done_callback(self.writes.discard)

    async def write(self, batch: list[tuple[Message, asyncio.Future[None]]]) -> None:
        try:
            await process_retrying_conflicts(self.processor, [message for message, _ in batch])
        except Exception as exc:
            for _, done in batch:
                done.set_exception(exc)
        else:
            for _, done in batch:
                done.set_result(None)
        finally:
            self.slots.release()


class Runtime:
    """An event loop in a daemon thread, and the processor built on it once; with a retention
    set (`CLICKSTREAM_RETENTION`), the instance prunes on that loop when it starts and hourly."""

    def __init__(self) -> None:
        configure_logging()  # as the worker: the applier's hand-offs are informational
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="processor")
        self.thread.start()
        self._coalescer: Coalescer | None = None
        self._pruner: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def coalescer(self) -> Coalescer:
        with self._lock:
            if self._coalescer is None:
                retention = db.retention_from_env(os.environ)
                processor = self.run(build_processor(Settings.from_env(), os.environ))
                if retention is not None:
                    self._pruner = self.run(start_pruning(processor, retention))
                self._coalescer = Coalescer(processor)
            return self._coalescer


async def build_processor(settings: Settings, env: Mapping[str, str]) -> Processor:
    from processor.postgres import start_sink
    from processor.sinks import other_sinks

    sink = await start_sink(settings.database_url, max_size=POOL_SIZE)
    return Processor(sink, await other_sinks(settings, env))


async def start_pruning(processor: Processor, retention: timedelta) -> asyncio.Task[None]:
    """Prune on one of the instance's connections now and every `PRUNE_EVERY` seconds.
    Between invocations Cloud Run may give the instance no CPU: a prune then waits for the
    next one, which is soon under load, when there is most to prune."""
    from processor.postgres import PostgresSink

    postgres = processor.sinks[0]
    assert isinstance(postgres, PostgresSink)
    return asyncio.create_task(db.prune_periodically(postgres.pool, retention, PRUNE_EVERY))


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def message_from(cloud_event: CloudEvent) -> Message:
    """The Pub/Sub message of a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent."""
    data = cloud_event.get_data()
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise ValueError("CloudEvent data has no Pub/Sub `message` object")
    message = data["message"]
    try:
        payload = base64.b64decode(message.get("data") or "", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"Pub/Sub `message.data` is not base64: {exc}") from None
    publish_time = message.get("publishTime") or message.get("publish_time")
    return Message(
        message_id=str(message.get("messageId") or message.get("message_id") or cloud_event["id"]),
        data=payload,
        attributes=message.get("attributes") or {},
        publish_time=datetime.fromisoformat(publish_time) if publish_time else None,
    )


async def process_retrying_conflicts(processor: Processor, messages: list[Message]) -> None:
    """Process messages; a deadlock or serialization failure is retried in place."""
    for retry in range(CONFLICT_RETRIES + 1):
        try:
            await processor.process(messages)
            return
        except TRANSACTION_CONFLICTS as exc:
            if retry == CONFLICT_RETRIES:
                log.warning(
                    "transaction conflict (%s) on %d messages: giving up after %d retries; "
                    "Pub/Sub redelivers them",
                    type(exc).__name__,
                    len(messages),
                    retry,
                )
                raise
            log.warning(
                "transaction conflict (%s) on %d messages: retry %d",
                type(exc).__name__,
                len(messages),
                retry + 1,
            )
            await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF * 2**retry))


@functions_framework.cloud_event
def process_pubsub(cloud_event: CloudEvent) -> None:
    message = message_from(cloud_event)
    rt = runtime()
    rt.run(rt.coalescer().process(message))
