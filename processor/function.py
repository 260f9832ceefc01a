"""Cloud Functions (gen2) shell: one Pub/Sub message per invocation, same core as the worker.

Terraform deploys a root `main.py` that imports `process_pubsub` from here, with the
environment `DATABASE_URL` (no password), `CLICKSTREAM_DB_PASSWORD` (Secret Manager) and the
usual `GOOGLE_CLOUD_PROJECT`. The asyncpg pool and the sinks live on an event loop in a
background thread that outlives invocations; the first invocation of an instance creates them
(and applies pending migrations, under the advisory lock). A transient failure raises, so the
invocation fails and Pub/Sub retries it (the trigger must have retries enabled); a message that
can never succeed is stored in `bad_events` by the core and the invocation succeeds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import threading
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar

import functions_framework
from cloudevents.http import CloudEvent

from clickstream_contract.config import Settings
from processor.core import Message, Processor

log = logging.getLogger(__name__)
T = TypeVar("T")


class Runtime:
    """An event loop in a daemon thread, and the processor built on it once."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="processor")
        self.thread.start()
        self._processor: Processor | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def processor(self) -> Processor:
        with self._lock:
            if self._processor is None:
                self._processor = self.run(build_processor(Settings.from_env(), os.environ))
            return self._processor


async def build_processor(settings: Settings, env: Mapping[str, str]) -> Processor:
    from processor.migrations import migrate
    from processor.postgres import PostgresSink, create_sink_pool
    from processor.sinks import other_sinks

    await migrate(settings.database_url)
    pool = await create_sink_pool(settings.database_url, max_size=2)
    return Processor(PostgresSink(pool), await other_sinks(settings, env))


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


@functions_framework.cloud_event
def process_pubsub(cloud_event: CloudEvent) -> None:
    message = message_from(cloud_event)
    rt = runtime()
    rt.run(rt.processor().process([message]))
