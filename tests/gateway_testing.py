"""The real gateway app in-process, for testing its clients (SDKs, tracker, load generator).

`serving()` runs `gateway.app.create_app` under uvicorn in a thread, on a free 127.0.0.1 port,
with a `MemoryTransport` in place of Pub/Sub: tests read back the envelopes the gateway
published, and each request it answered (`Exchange`, recorded at the ASGI boundary). Statuses
come from the gateway itself: 503 when the transport is told to fail, 413 from its limits.
`serving_pages()` is the shop: a static server for the pages a browser loads.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn

from clickstream_contract import envelope
from clickstream_contract.config import Settings
from clickstream_contract.envelope import Group, Kind
from gateway.app import create_app
from gateway.pubsub import PublishFailed
from gateway.settings import GatewaySettings
from gateway.types import Publish, Receive, Scope, Send

WRITE_KEY = "test-key"  # source "web"


# Where the gateway must publish each kind of envelope (the settings `serving()` gives it).
TOPICS: dict[Kind, str] = {"events": Settings.events_topic, "bad": Settings.bad_events_topic}


@dataclass
class Message:
    topic: str
    envelope: envelope.Envelope


class MemoryTransport:
    """A `gateway.types.Transport` that keeps every message the gateway publishes, in order.

    `fail_next`: the next that many messages of accepted events fail the way Pub/Sub failing
    for good does (the requests they carry get 503), and go to `failed`; messages of refused
    events do not count, so with one request per message (`rpc_max_groups=1`) exactly that
    many requests get 503.
    `hold_next`: the next that many messages are kept, but their publish returns only after
    `release()` (an acknowledgement that comes late).
    """

    def __init__(self, fail_next: int = 0, hold_next: int = 0) -> None:
        self.failing = False
        self.fail_next = fail_next
        self.hold_next = hold_next
        self.messages: list[Message] = []
        self.failed: list[Message] = []
        self._released = threading.Event()

    def publish_to(self, topic: str) -> Publish:
        async def publish(data: bytes, attributes: dict[str, str]) -> None:
            message = Message(topic, envelope.decode(data, attributes))
            if message.envelope.kind == "events" and self.fail_next > 0:
                self.fail_next -= 1
                self.failed.append(message)
                raise PublishFailed("Pub/Sub: UNAVAILABLE")
            self.messages.append(message)
            if self.hold_next > 0:
                self.hold_next -= 1
                await asyncio.to_thread(self._released.wait)

        return publish

    async def ready(self, topics: tuple[str, ...]) -> bool:
        return not self.failing

    async def close(self) -> None:
        pass

    def release(self) -> None:
        """Let every held publish return."""
        self._released.set()

    def groups(self, kind: Kind = "events") -> list[Group]:
        """The groups (one per request) published to `kind`'s topic, in publish order; every
        message there must be an envelope of that kind."""
        found = [m for m in list(self.messages) if m.topic == TOPICS[kind]]
        assert all(m.envelope.kind == kind for m in found), f"another kind on {TOPICS[kind]}"
        return [g for m in found for g in m.envelope.groups]

    def failed_groups(self) -> list[Group]:
        return [g for m in list(self.failed) for g in m.envelope.groups]

    def events(self, kind: Kind = "events") -> list[dict[str, Any]]:
        return [json.loads(event) for group in self.groups(kind) for event in group.events]

    def published_counts(self) -> Counter[str]:
        """How many times each event id was published as accepted."""
        return Counter(event["event_id"] for event in self.events())


@dataclass
class Exchange:
    """One request as the gateway received it, and the status it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case, as ASGI gives them
    at: float = field(default_factory=time.monotonic)  # arrival
    status: int | None = None


class Recording:
    """ASGI middleware: appends an `Exchange` per HTTP request to `exchanges`."""

    def __init__(self, app: Any, exchanges: list[Exchange]) -> None:
        self.app = app
        self.exchanges = exchanges

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(
            scope["method"],
            scope["path"],
            parse_qs(scope["query_string"].decode("latin-1")),
            {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]},
        )
        self.exchanges.append(exchange)

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            await send(message)

        await self.app(scope, receive, recording_send)


@dataclass
class LocalGateway:
    url: str
    transport: MemoryTransport
    exchanges: list[Exchange]
    write_key: str = WRITE_KEY

    def ingest_requests(self) -> list[Exchange]:
        """The answered POSTs to the ingest routes, in order of arrival."""
        return [
            e
            for e in list(self.exchanges)
            if e.method == "POST" and e.path.startswith("/v1/") and e.status is not None
        ]


@contextmanager
def serving(
    limits: GatewaySettings | None = None, transport: MemoryTransport | None = None
) -> Iterator[LocalGateway]:
    """The gateway on a free loopback port for the duration of the block; `WRITE_KEY` is its
    one write key."""
    transport = transport or MemoryTransport()
    exchanges: list[Exchange] = []
    app = create_app(
        Settings(write_keys={WRITE_KEY: "web"}), limits or GatewaySettings(), transport
    )
    config = uvicorn.Config(
        Recording(app, exchanges),
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the gateway did not start (see the log above)")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LocalGateway(f"http://127.0.0.1:{port}", transport, exchanges)
    finally:
        transport.release()  # shutting down drains the publish queue, held publishes included
        server.should_exit = True
        thread.join()


@dataclass
class Shop:
    url: str
    pages: dict[str, tuple[str, bytes]]  # path -> (content type, body); may change while served


@contextmanager
def serving_pages(pages: dict[str, tuple[str, bytes]]) -> Iterator[Shop]:
    """A static HTTP server on a free loopback port (another origin than the gateway's)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            page = pages.get(urlsplit(self.path).path)
            content_type, body = page or ("text/plain", b"not found")
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="shop", daemon=True)
    thread.start()
    try:
        yield Shop(f"http://127.0.0.1:{server.server_address[1]}", pages)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
