"""Publishing envelopes to Pub/Sub with the generated `google.pubsub_v1` async client.

The gateway batches on its own (`gateway.batcher`), so it calls the Publish method on the
client's gRPC channel directly: the generated client's per-call wrappers (retry objects, routing
headers, universe checks) cost much of the single-event path's CPU, and the retry policy here is
simpler and knows when to stop. The request is written in protobuf's wire format by hand
(`publish_request`): building and serializing it through protobuf copied the megabyte-sized
envelope several times. The measurements are in benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Final

import grpc
from google.api_core import exceptions as api_exceptions
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport

from clickstream_contract.config import PUBSUB_CHANNEL_OPTIONS, Settings
from gateway.protobuf_wire import varint

log = logging.getLogger(__name__)

PUBLISH_METHOD: Final = "/google.pubsub.v1.Publisher/Publish"


def emulator_channel(host: str) -> grpc.aio.Channel:
    """An insecure channel to a Pub/Sub emulator: the generated async clients ignore
    `PUBSUB_EMULATOR_HOST` (only the hand-written sync clients read it)."""
    return grpc.aio.insecure_channel(host, options=PUBSUB_CHANNEL_OPTIONS)


def publisher_async_client(settings: Settings) -> PublisherAsyncClient:
    """The generated async client, on a channel to the emulator when one is set."""
    if settings.pubsub_emulator_host is None:
        return PublisherAsyncClient()
    channel = emulator_channel(settings.pubsub_emulator_host)
    return PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel))


def _field(number: int, payload: bytes) -> bytes:
    """Tag and length of a length-delimited protobuf field (the payload follows)."""
    return varint(number << 3 | 2) + varint(len(payload))


def publish_request(topic_path: str, data: bytes, attributes: dict[str, str]) -> bytes:
    """`PublishRequest(topic, messages=[PubsubMessage(data, attributes)])`, serialized."""
    entries = b""
    for key, value in attributes.items():
        entry = _field(1, k := key.encode()) + k + _field(2, v := value.encode()) + v
        entries += _field(2, entry) + entry
    head = _field(1, data)
    message_size = len(head) + len(data) + len(entries)
    topic = topic_path.encode()
    prefix = _field(1, topic) + topic + varint(2 << 3 | 2) + varint(message_size) + head
    return b"".join((prefix, data, entries))


# Codes Google's own publisher retries (publisher_client_config + UNAVAILABLE on connect).
RETRYABLE: Final = frozenset(
    {
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
    }
)
ATTEMPT_TIMEOUT_S: Final = 10.0
FIRST_BACKOFF_S: Final = 0.05
MAX_BACKOFF_S: Final = 2.0
PROBE_INTERVAL_S: Final = 1.0
READY_CACHE_S: Final = 1.0


class PublishFailed(Exception):
    """Pub/Sub refused the message or stayed unreachable until the deadline."""


class PubSub:
    """The default `Transport` (gateway.types): one channel to Pub/Sub for both topics.

    `failing` turns true when a publish fails for good and back to false once Pub/Sub answers
    again (a probe runs every second meanwhile); the gateway refuses requests with 503 while it
    is true instead of queueing what it cannot deliver.
    """

    def __init__(self, settings: Settings, publish_timeout_s: float) -> None:
        self.settings = settings
        self.client = publisher_async_client(settings)
        # Bytes in, bytes out: the request comes from `publish_request`, the response (message
        # ids) is not needed.
        channel = self.client.transport.grpc_channel  # type: ignore[attr-defined]
        self._publish = channel.unary_unary(PUBLISH_METHOD)
        self._timeout_s = publish_timeout_s
        self.failing = False
        self._probe: asyncio.Task[None] | None = None
        self._ready_checked = 0.0
        self._ready = False

    def publish_to(self, topic: str) -> _Topic:
        return _Topic(self, self.settings.topic_path(topic))

    async def ready(self, topics: tuple[str, ...]) -> bool:
        """Whether Pub/Sub answers for every topic (cached for a second: /readyz is polled)."""
        now = time.monotonic()
        if now - self._ready_checked >= READY_CACHE_S:
            self._ready_checked = now
            try:
                for topic in topics:
                    await self.client.get_topic(
                        topic=self.settings.topic_path(topic), timeout=2.0, retry=None
                    )
            except (api_exceptions.GoogleAPICallError, grpc.RpcError) as exc:
                log.warning("Pub/Sub topic %s is not reachable: %s", topic, exc)
                self._ready = False
            else:
                self._ready = True
        return self._ready and not self.failing

    def mark_failing(self, topic_path: str) -> None:
        if self.failing:
            return
        self.failing = True
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_ok(topic_path))

    async def _probe_until_ok(self, topic_path: str) -> None:
        while self.failing:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self.client.get_topic(topic=topic_path, timeout=2.0, retry=None)
            except (api_exceptions.GoogleAPICallError, grpc.RpcError):
                continue
            log.info("Pub/Sub answers again; accepting events")
            self.failing = False

    async def close(self) -> None:
        self.failing = False
        if self._probe is not None:
            self._probe.cancel()
        await self.client.transport.close()


class _Topic:
    """Publishes to one topic, retrying transient errors until the publish timeout."""

    def __init__(self, pubsub: PubSub, topic_path: str) -> None:
        self._pubsub = pubsub
        self._topic_path = topic_path
        self._metadata = (("x-goog-request-params", f"topic={topic_path}"),)

    async def __call__(self, data: bytes, attributes: dict[str, str]) -> None:
        request = publish_request(self._topic_path, data, attributes)
        deadline = time.monotonic() + self._pubsub._timeout_s
        backoff = FIRST_BACKOFF_S
        while True:
            timeout = min(ATTEMPT_TIMEOUT_S, max(deadline - time.monotonic(), 0.1))
            try:
                await self._pubsub._publish(request, timeout=timeout, metadata=self._metadata)
                return
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                delay = backoff * (0.5 + random.random())
                if code not in RETRYABLE or time.monotonic() + delay >= deadline:
                    log.error(
                        "publishing to %s failed: %s %s", self._topic_path, code, exc.details()
                    )
                    self._pubsub.mark_failing(self._topic_path)
                    raise PublishFailed(f"Pub/Sub: {code.name}") from None
                log.warning("publish to %s: %s, retrying", self._topic_path, code.name)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
