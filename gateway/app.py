"""The gateway's ASGI application: `create_app()` builds it (Granian calls it as a factory).

The two ingest routes are raw ASGI endpoints dispatched by exact path before Starlette's router
(whose middleware and routing were a large share of the single-event path: benchmarks/README.md,
"Measurements behind design choices"); everything
else (health, readiness, metrics, OpenAPI, lifespan) is a plain Starlette `Router`. The whole
app is wrapped so that an unexpected exception is logged and counted as the bug it is but never
answers 500: it answers 503 with Retry-After, so a client keeps the events and retries rather
than dropping them as if they were bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, Router

from clickstream_contract.answers import Rejection
from clickstream_contract.config import Settings
from clickstream_contract.envelope import Group, Kind
from clickstream_contract.gc_tuning import tune_after_startup
from gateway import metrics, segment
from gateway.auth_limit import AuthFailures
from gateway.batcher import Batcher, PublisherUnavailable, QueueFull, group_size
from gateway.client_ip import Address, ClientAddresses
from gateway.cors import Cors
from gateway.openapi import openapi_document
from gateway.parsing import (
    HTTPError,
    RequestHeaders,
    WriteKeys,
    authenticate,
    read_headers,
    read_json_body,
)
from gateway.pubsub import PublishFailed, PubSub
from gateway.responses import send_accepted, send_error
from gateway.settings import GatewaySettings
from gateway.tracker import TRACKER_CONTENT_TYPE, TRACKER_PATH, tracker_script
from gateway.types import Check, Headers, Receive, Scope, Send, Transport
from gateway.validation import Checked, check_batch, check_single

log = logging.getLogger(__name__)

# The CORS headers of an answer given before the Origin header is read (never mutated).
NO_HEADERS: Final[Headers] = []


class Publisher:
    """The two batchers (`events`, `events-bad`) over one transport."""

    def __init__(self, settings: Settings, limits: GatewaySettings, transport: Transport) -> None:
        self.transport = transport
        self.topics = (settings.events_topic, settings.bad_events_topic)

        def batcher(kind: Kind, topic: str) -> Batcher:
            return Batcher(
                kind,
                transport.publish_to(topic),
                flush_s=limits.flush_ms / 1000,
                max_bytes=limits.rpc_max_bytes,
                max_groups=limits.rpc_max_groups,
                max_inflight=limits.max_inflight_rpcs,
                queue_max_bytes=limits.queue_max_bytes,
                observe=self._observe,
            )

        self.events = batcher("events", settings.events_topic)
        self.bad = batcher("bad", settings.bad_events_topic)

    def _observe(self, kind: Kind, events: int, size: int, seconds: float, ok: bool) -> None:
        metrics.observe_publish(kind, events, size, seconds, ok)
        metrics.QUEUE_BYTES.set(self.events.queued_bytes + self.bad.queued_bytes)

    async def ready(self) -> bool:
        return await self.transport.ready(self.topics)

    async def close(self) -> None:
        """Publish everything accepted so far, then disconnect."""
        await asyncio.gather(self.events.drain(), self.bad.drain())
        await self.transport.close()


class Gateway:
    """The ASGI app. It publishes through `transport`; by default (None) through Pub/Sub,
    connected in `lifespan`."""

    def __init__(
        self, settings: Settings, limits: GatewaySettings, transport: Transport | None = None
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.transport = transport
        self.keys = WriteKeys(settings.write_keys)
        self.clients = ClientAddresses(limits.trusted_proxies, limits.ip_truncate)
        self.auth_failures = AuthFailures(limits.auth_max_failures, limits.auth_window_s)
        self.cors = Cors(limits.cors_origins)
        self.retry_after = str(limits.retry_after_s).encode()
        self.publisher: Publisher | None = None
        # Exact paths served by raw ASGI endpoints.
        self.ingest_routes: dict[str, Check] = {
            "/v1/events": lambda body, source: (
                check_single(body, limits.max_event_bytes),
                answer_accepted,
            ),
            "/v1/batch": lambda body, source: (
                check_batch(body, limits.max_event_bytes, limits.max_batch_events),
                answer_accepted,
            ),
        }
        # Segment's tracking API; on /v1/batch, a body ours refuses is tried as Segment's batch.
        self.ingest_routes.update(segment.routes(limits, self.ingest_routes["/v1/batch"]))
        self.router = Router(
            routes=[
                # Cloud Run's front end keeps some paths ending in `z` for itself: the public
                # URL serves /health and /ready; probes, which reach the container, may use both.
                Route("/health", self.healthz, methods=["GET"]),
                Route("/ready", self.readyz, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route(TRACKER_PATH, self.tracker, methods=["GET"]),
            ],
            lifespan=self.lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["type"] == "http":
                check = self.ingest_routes.get(scope["path"])
                if check is not None:
                    await self.ingest(scope, receive, send, check)
                    return
            await self.router(scope, receive, send)  # type: ignore[arg-type]
        except Exception:
            if scope["type"] != "http":
                raise
            # A bug, not bad input: loud in logs and metrics; the client is told to retry.
            log.exception("unexpected error handling %s %s", scope["method"], scope["path"])
            metrics.UNEXPECTED_ERRORS.inc()
            # If the response had already started, nothing more can be said.
            with contextlib.suppress(Exception):
                await send_error(
                    send,
                    503,
                    "the request could not be processed; retry later",
                    [(b"retry-after", self.retry_after)],
                )

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        transport = self.transport
        if transport is None:
            # In each worker, never before Granian forks: gRPC does not survive a fork.
            transport = PubSub(self.settings, self.limits.publish_timeout_s)
        self.publisher = Publisher(self.settings, self.limits, transport)
        tune_after_startup()
        try:
            yield
        finally:
            log.info("draining the publish queue")
            await self.publisher.close()
            log.info("publish queue drained")

    async def ingest(self, scope: Scope, receive: Receive, send: Send, check: Check) -> None:
        route = scope["path"]
        cors = NO_HEADERS  # until the Origin header is read
        try:
            headers = read_headers(scope)
            cors = self.cors.headers(headers.origin)
            method = scope["method"]
            if method == "OPTIONS":
                await self.preflight(send, headers)
                return
            if method != "POST":
                raise HTTPError(405, "use POST", [(b"allow", b"POST, OPTIONS")])
            client = scope.get("client")
            address = self.clients.client(client[0] if client else None, headers.forwarded_for)
            limit = self.limits.max_request_bytes
            if route in segment.KEY_IN_BODY_PATHS:
                # analytics.js may carry its write key in the body only: read the body first.
                body = await read_json_body(receive, headers, limit)
                body_key = segment.body_write_key(body)
                source = self.authenticate(headers, scope["query_string"], address, body_key)
            else:
                source = self.authenticate(headers, scope["query_string"], address)
                body = await read_json_body(receive, headers, limit)
            try:
                checked, answer = check(body, source)
            except RecursionError:  # msgspec's decoders recurse into nested arrays/objects
                raise HTTPError(400, "body is nested too deeply to decode") from None
            await self.publish(self.clients.stored(address), headers, source, checked)
        except HTTPError as exc:
            metrics.TALLY.request(route, exc.status)
            await send_error(send, exc.status, exc.message, cors + exc.headers)
            return
        metrics.TALLY.events(len(checked.good), len(checked.rejected))
        status = await answer(send, len(checked.good), checked.rejected, cors)
        metrics.TALLY.request(route, status)

    def authenticate(
        self,
        headers: RequestHeaders,
        query_string: bytes,
        address: Address | None,
        body_key: bytes = b"",
    ) -> str:
        """The key's source; 429 while `address` is blocked for failing too often."""
        wait = self.auth_failures.retry_after(address)
        if wait is not None:
            raise HTTPError(
                429,
                "too many failed authentications from this address; retry later",
                [(b"retry-after", str(wait).encode())],
            )
        try:
            return authenticate(headers, query_string, self.keys, body_key)
        except HTTPError:
            self.auth_failures.failed(address)
            raise

    async def preflight(self, send: Send, headers: RequestHeaders) -> None:
        if not self.cors.allows(headers.origin):
            await send_error(send, 403, "origin not allowed", [])
            return
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": self.cors.preflight_headers(headers.origin),
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def publish(
        self, client_ip: str | None, headers: RequestHeaders, source: str, checked: Checked
    ) -> None:
        """Hand the request's events to the batchers and wait until they are published."""
        publisher = self.publisher
        if publisher is None or publisher.transport.failing:
            raise HTTPError(503, "Pub/Sub is unavailable", self._retry_after())
        received_at = datetime.now(UTC)
        user_agent = headers.user_agent.decode("latin-1") or None
        waiting = []
        try:
            if checked.good:
                group = Group(received_at, source, checked.good, client_ip, user_agent)
                waiting.append(publisher.events.submit(group, group_size(group)))
            if checked.bad:
                group = Group(
                    received_at, source, checked.bad, client_ip, user_agent, checked.reasons
                )
                waiting.append(publisher.bad.submit(group, group_size(group)))
            # Shielded: a cancelled request must not cancel the batch other requests share.
            for future in waiting:
                await asyncio.shield(future)
        except QueueFull:
            raise HTTPError(429, "publish queue is full", self._retry_after()) from None
        except PublisherUnavailable as exc:
            raise HTTPError(503, str(exc), self._retry_after()) from None
        except PublishFailed as exc:
            raise HTTPError(503, f"events not published: {exc}", self._retry_after()) from None

    def _retry_after(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", self.retry_after)]

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        if self.publisher is not None and await self.publisher.ready():
            return PlainTextResponse("ready")
        return PlainTextResponse("Pub/Sub not reachable", status_code=503)

    async def metrics(self, request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self.limits))

    async def tracker(self, request: Request) -> Response:
        # Shops load it cross-origin as <script type="module">, which needs CORS; it is public.
        return Response(
            tracker_script(),
            media_type=TRACKER_CONTENT_TYPE,
            headers={
                "access-control-allow-origin": "*",
                "cache-control": "public, max-age=3600",
            },
        )


async def answer_accepted(
    send: Send, accepted: int, rejected: list[Rejection], headers: Headers
) -> int:
    await send_accepted(send, accepted, rejected, headers)
    return 202


def create_app(
    settings: Settings | None = None,
    limits: GatewaySettings | None = None,
    transport: Transport | None = None,
) -> Gateway:
    """The gateway ASGI app; settings default to the environment, the transport to Pub/Sub."""
    return Gateway(settings or Settings.from_env(), limits or GatewaySettings.from_env(), transport)
