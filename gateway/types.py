"""The types the gateway's modules share, each named once (after Starlette's `starlette.types`).

ASGI: `Scope`, `Receive`, `Send`, `Headers`. Publishing: `Publish` sends one message to one
topic; a `Transport` is where messages go (Pub/Sub in `gateway.pubsub`; tests pass an
in-memory one). Ingest routes: a `Check` reads a body, an `Answer` answers once it is published.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from clickstream_contract.answers import Rejection

if TYPE_CHECKING:
    from gateway.validation import Checked

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
# ASGI's send: one response message at a time.
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# publish(data, attributes) publishes one message durably, or raises
# `gateway.pubsub.PublishFailed` (the waiting requests answer 503).
Publish = Callable[[bytes, dict[str, str]], Awaitable[None]]


class Transport(Protocol):
    """Where the batchers' messages go: `publish_to(topic)` is the batcher's `Publish`.

    While `failing`, the gateway answers 503 at once instead of queueing what it cannot deliver.
    """

    failing: bool

    def publish_to(self, topic: str) -> Publish: ...

    async def ready(self, topics: tuple[str, ...]) -> bool:
        """Whether every topic can be published to (what /readyz reports)."""
        ...

    async def close(self) -> None: ...


# How a route answers once its events are published: sends, and returns the status it sent.
Answer = Callable[[Send, int, list[Rejection], Headers], Awaitable[int]]
# A route checks a (decompressed) body from a source against the contract: which events to
# publish, which not, and how to answer (ours 202; Segment's 200, see gateway.segment).
Check = Callable[[bytes, str], tuple["Checked", Answer]]
