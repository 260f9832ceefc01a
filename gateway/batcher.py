"""The gateway's asyncio batcher: many requests' events become few Pub/Sub messages.

Each HTTP request hands over one `Group` and waits on a future. Groups accumulate in the open
batch; a batch is cut when it reaches `max_bytes` or `max_groups`, or `flush_s` after its first
group arrived. Up to `max_inflight` batches are being published at once; while all slots are
busy the open batch keeps growing, so batches get larger exactly when throughput matters. Every
group of a batch shares one future, resolved when the batch's message is durably published (or
failed for good).

Memory is bounded: bytes accepted but not yet published never exceed `queue_max_bytes`; beyond
that `submit` raises `QueueFull` and the caller answers 429.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from clickstream_contract import envelope
from clickstream_contract.envelope import Group, Kind
from gateway.types import Publish

log = logging.getLogger(__name__)

# Fixed msgpack overhead of one group (keys, timestamp, small headers); an estimate is enough
# because batches are cut far below the message limit.
GROUP_OVERHEAD: Final = 96
PER_EVENT_OVERHEAD: Final = 5


class QueueFull(Exception):
    """More bytes are waiting to be published than the configured bound."""


class PublisherUnavailable(Exception):
    """The publisher is draining or Pub/Sub is failing; retry later."""


# observe(kind, event_count, message_bytes, seconds, ok) after every publish attempt.
Observe = Callable[[Kind, int, int, float, bool], None]


def group_size(group: Group) -> int:
    """Approximate encoded size of a group in the envelope."""
    size = GROUP_OVERHEAD + len(group.source)
    size += len(group.user_agent) if group.user_agent else 0
    for event in group.events:
        size += len(event) + PER_EVENT_OVERHEAD
    for reason in group.reasons:
        size += len(reason) + PER_EVENT_OVERHEAD
    return size


@dataclass(slots=True)
class _Batch:
    future: asyncio.Future[None]
    groups: list[Group] = field(default_factory=list)
    size: int = 0
    events: int = 0


class Batcher:
    def __init__(
        self,
        kind: Kind,
        publish: Publish,
        *,
        flush_s: float,
        max_bytes: int,
        max_groups: int,
        max_inflight: int,
        queue_max_bytes: int,
        observe: Observe | None = None,
    ) -> None:
        if max_bytes > envelope.MAX_MESSAGE_BYTES:
            raise ValueError(f"max_bytes must be at most {envelope.MAX_MESSAGE_BYTES}")
        self.kind: Kind = kind
        self._publish_message = publish
        self._flush_s = flush_s
        self._max_bytes = max_bytes
        self._max_groups = max_groups
        self._max_inflight = max_inflight
        self._queue_max_bytes = queue_max_bytes
        self._observe = observe
        self._loop = asyncio.get_running_loop()
        self._open = self._new_batch()
        self._ready: deque[_Batch] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._flush_due = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued_bytes = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def submit(self, group: Group, size: int) -> asyncio.Future[None]:
        """Queue `group` (of `group_size` bytes); the future resolves once it is published."""
        if self._closing:
            raise PublisherUnavailable("the gateway is shutting down")
        if self._queued_bytes + size > self._queue_max_bytes:
            raise QueueFull(f"{self._queued_bytes} bytes are waiting to be published")
        batch = self._open
        if batch.groups and batch.size + size > self._max_bytes:
            self._cut()
            batch = self._open
        batch.groups.append(group)
        batch.size += size
        batch.events += len(group.events)
        self._queued_bytes += size
        self._idle.clear()
        if batch.size >= self._max_bytes or len(batch.groups) >= self._max_groups:
            self._cut()
        elif self._timer is None and not self._flush_due:
            self._timer = self._loop.call_later(self._flush_s, self._on_timer)
        return batch.future

    async def drain(self) -> None:
        """Refuse new groups, publish everything queued, and wait until it is done."""
        self._closing = True
        if self._open.groups:
            self._cut()
        await self._idle.wait()

    def _new_batch(self) -> _Batch:
        return _Batch(future=self._loop.create_future())

    def _on_timer(self) -> None:
        self._timer = None
        if self._inflight < self._max_inflight:
            self._cut()
        else:
            # Every slot is busy: let the open batch grow until one frees up.
            self._flush_due = True

    def _cut(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush_due = False
        if self._open.groups:
            self._ready.append(self._open)
            self._open = self._new_batch()
        self._pump()

    def _pump(self) -> None:
        while self._ready and self._inflight < self._max_inflight:
            batch = self._ready.popleft()
            self._inflight += 1
            task = self._loop.create_task(self._publish(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self, batch: _Batch) -> None:
        started = time.perf_counter()
        ok = False
        data = b""
        try:
            data = envelope.encode(self.kind, batch.groups)
            await self._publish_message(data, envelope.attributes(self.kind, batch.events))
            ok = True
            batch.future.set_result(None)
        except Exception as exc:
            # The waiting requests answer 503; the cause is logged by the transport.
            batch.future.set_exception(exc)
            # Retrieved here too so a batch nobody awaits any more does not warn.
            batch.future.exception()
        finally:
            self._inflight -= 1
            self._queued_bytes -= batch.size
            if self._observe is not None:
                self._observe(self.kind, batch.events, len(data), time.perf_counter() - started, ok)
            if not self._ready and self._open.groups and (self._flush_due or self._closing):
                self._cut()
            else:
                self._pump()
            if self._inflight == 0 and not self._ready and not self._open.groups:
                self._idle.set()
