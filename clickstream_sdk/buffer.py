"""The clients' bounded buffer of encoded events, and the counters both clients report.

Policy when full: the NEW event is dropped. `enqueue` returns None for it, `stats.dropped`
counts it and a warning is logged (the first drop, then every 1,000th), so the application
neither blocks nor crashes because analytics is slow, and nothing is lost without a trace.
Events already buffered keep their order. Why newest rather than oldest: the caller learns at
once, from the return value, that this event was not taken.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from clickstream_contract.answers import IngestResponse
from clickstream_contract.event import Event
from clickstream_sdk.delivery import MAX_EVENT_BYTES

log = logging.getLogger("clickstream_sdk")
_encoder = msgspec.json.Encoder()


@dataclass
class Stats:
    enqueued: int = 0
    accepted: int = 0  # acknowledged with 202 by the gateway
    rejected: int = 0  # refused one by one inside a 202 (invalid events; logged)
    dropped: int = 0  # not taken because the buffer was full
    failed: int = 0  # given up after retries or refused outright (401, 400...; logged)
    retries: int = 0

    def settled(
        self, events: Sequence[bytes], accepted: IngestResponse | None, reason: str
    ) -> None:
        """Count a batch the gateway has answered for (a `delivery.Settled` callback)."""
        if not events:
            return
        if accepted is None:
            self.failed += len(events)
            log.error("clickstream: gave up on %d events: %s", len(events), reason)
            return
        self.accepted += accepted.accepted
        self.rejected += len(accepted.rejected)
        for rejection in accepted.rejected[:5]:
            log.warning(
                "clickstream: event %d of a batch rejected: %s", rejection.index, rejection.error
            )


def encode_event(event: Event) -> bytes:
    data = _encoder.encode(event)
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError(
            f"event {event.event_id} is {len(data)} bytes as JSON; "
            f"the gateway accepts at most {MAX_EVENT_BYTES} bytes per event"
        )
    return data


class EventBuffer:
    """FIFO of encoded events, at most `capacity` of them. Not thread-safe by itself."""

    def __init__(self, capacity: int, stats: Stats) -> None:
        if capacity < 1:
            raise ValueError("max_buffer must be at least 1")
        self.capacity = capacity
        self.stats = stats
        self._items: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, data: bytes) -> bool:
        if len(self._items) >= self.capacity:
            self.stats.dropped += 1
            if self.stats.dropped % 1000 == 1:
                log.warning(
                    "clickstream: buffer full (%d events); dropping new events (%d so far)",
                    self.capacity,
                    self.stats.dropped,
                )
            return False
        self._items.append(data)
        self.stats.enqueued += 1
        return True

    def take(self, max_events: int, max_bytes: int) -> list[bytes]:
        """Up to `max_events` events from the front whose batch body fits in `max_bytes`."""
        batch: list[bytes] = []
        size = 16  # {"events":[ ]}
        while self._items and len(batch) < max_events:
            item_size = len(self._items[0]) + 1
            if batch and size + item_size > max_bytes:
                break
            batch.append(self._items.popleft())
            size += item_size
        return batch

    def take_all(self) -> list[bytes]:
        items = list(self._items)
        self._items.clear()
        return items
