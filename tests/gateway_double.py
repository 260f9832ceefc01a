"""A test double of the gateway's HTTP behaviour, for testing clients (SDKs, tracker, loadgen).

A real HTTP/1.1 server on 127.0.0.1 in a thread that speaks the gateway's API (POST /v1/events,
POST /v1/batch; write key as Bearer, Basic, X-Write-Key or ?writeKey=; gzip; text/plain
beacons), validates each event with the real contract decoder, and records every event id it
accepted, in order, so tests can see losses and duplicates. `fail_next` answers the next N
ingest requests with 503 + Retry-After, as the gateway does when Pub/Sub is unreachable.
It does not publish anything: clients are what is under test.
"""

from __future__ import annotations

import base64
import gzip
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

import msgspec

from clickstream_contract.event import Batch, Event

_event_decoder = msgspec.json.Decoder(Event)
_batch_decoder = msgspec.json.Decoder(Batch)


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    events: list[dict[str, Any]]
    at: float = field(default_factory=time.monotonic)


@dataclass
class GatewayDouble:
    write_key: str = "test-key"
    retry_after: str = "1"
    fail_next: int = 0
    max_batch_events: int = 500
    # Answer the next N ingest requests only after `stall_seconds` (the events are accepted).
    stall_next: int = 0
    stall_seconds: float = 0.0
    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def accepted_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.accepted)

    def ingest_requests(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith("/v1/")]

    def authorized(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> bool:
        auth = handler.headers.get("Authorization", "")
        keys = {handler.headers.get("X-Write-Key"), *query.get("writeKey", [])}
        if auth.startswith("Bearer "):
            keys.add(auth.removeprefix("Bearer "))
        elif auth.startswith("Basic "):
            keys.add(base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")[0])
        return self.write_key in keys

    def handle_ingest(self, handler: BaseHTTPRequestHandler, path: str) -> tuple[int, bytes]:
        query = parse_qs(urlsplit(handler.path).query)
        body = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        if handler.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        content_type = handler.headers.get("Content-Type", "").split(";")[0]
        status, answer, events = self.answer(handler, path, query, body, content_type)
        with self.lock:
            self.requests.append(
                Request(path, query, dict(handler.headers.items()), status, events)
            )
        return status, answer

    def answer(
        self,
        handler: BaseHTTPRequestHandler,
        path: str,
        query: dict[str, list[str]],
        body: bytes,
        content_type: str,
    ) -> tuple[int, bytes, list[dict[str, Any]]]:
        if not self.authorized(handler, query):
            return 401, b'{"error": "unknown write key"}', []
        if content_type not in ("application/json", "text/plain"):
            return 415, b'{"error": "unsupported content type"}', []
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, b'{"error": "publisher unavailable"}', []
        try:
            raws = (
                [msgspec.Raw(body)] if path == "/v1/events" else _batch_decoder.decode(body).events
            )
        except msgspec.DecodeError as error:
            return 400, json.dumps({"error": str(error)}).encode(), []
        if len(raws) > self.max_batch_events:
            return 413, b'{"error": "too many events in one request"}', []
        rejected, events = [], []
        for index, raw in enumerate(raws):
            try:
                event = _event_decoder.decode(raw)
            except msgspec.ValidationError as error:
                rejected.append({"index": index, "error": str(error)})
                continue
            events.append(json.loads(bytes(raw)))
            with self.lock:
                self.accepted.append(str(event.event_id))
        answer = {"accepted": len(raws) - len(rejected), "rejected": rejected}
        return 202, json.dumps(answer).encode(), events


@contextmanager
def running(double: GatewayDouble | None = None) -> Iterator[GatewayDouble]:
    """Serve a double on a free 127.0.0.1 port (its `url`) for the duration of the block."""
    served = double or GatewayDouble()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real gateway
        # Headers and body go out in two writes: without this, Nagle's algorithm and delayed
        # ACKs add 40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status in (429, 503):
                self.send_header("Retry-After", served.retry_after)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path not in ("/v1/events", "/v1/batch"):
                self.reply(404, b"{}", "application/json")
                return
            status, body = served.handle_ingest(self, path)
            with served.lock:
                stall, served.stall_next = served.stall_next > 0, max(0, served.stall_next - 1)
            if stall:
                time.sleep(served.stall_seconds)
            self.reply(status, body, "application/json")

        def do_GET(self) -> None:
            page = served.pages.get(urlsplit(self.path).path)
            if page is None:
                self.reply(404, b"not found", "text/plain")
            else:
                self.reply(200, page[1], page[0])

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # many keep-alive connections open at once

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hung up on a stalled answer: expected in tests

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="gateway-double", daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
