"""The gateway on Granian's native RSGI interface: the same ASGI app, without ASGI's transport.

Under Granian's ASGI interface every `receive()` and `send()` is an awaitable that crosses into
Rust and back through the event loop; a raw RSGI app answers markedly more requests per second
than the same raw ASGI app (benchmarks/README.md, the raw Granian peers).
Here each request reads its body with one `await protocol()` and answers with one synchronous
`protocol.response_bytes(...)`, while the application itself stays the plain ASGI callable
(`gateway.app.Gateway`): this module only translates scope, body and response. The ASGI
lifespan (publisher start, drain on SIGTERM) runs from RSGI's init and del hooks.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.app import Gateway, create_app


def client_address(client: str) -> tuple[str, int] | None:
    """RSGI's "host:port" ("[v6]:port" for IPv6) as ASGI's (host, port)."""
    host, _, port = client.rpartition(":")
    if not host:
        return None
    return host.strip("[]"), int(port)


class _Exchange:
    """One request: ASGI `receive`/`send` over an RSGI protocol object."""

    __slots__ = ("_body_read", "_chunks", "_headers", "_parts", "_protocol", "_sized", "_status")

    def __init__(self, protocol: Any, sized: bool) -> None:
        self._protocol = protocol
        self._sized = sized
        self._body_read = False
        self._chunks: Any = None
        self._status = 500
        self._headers: list[tuple[str, str]] = []
        self._parts: list[bytes] = []

    async def receive(self) -> dict[str, Any]:
        if self._body_read:
            await self._protocol.client_disconnect()
            return {"type": "http.disconnect"}
        if self._sized:
            # Content-Length is known and was checked against the limit before this call.
            self._body_read = True
            return {"type": "http.request", "body": await self._protocol(), "more_body": False}
        # Chunked: stream it, so the reader can stop at its limit instead of buffering it all.
        if self._chunks is None:
            self._chunks = aiter(self._protocol)
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._body_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            return
        self._parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._protocol.response_bytes(self._status, self._headers, body)


class RSGIGateway:
    """RSGI application wrapping the ASGI gateway (what `clickstream gateway` serves)."""

    def __init__(self, app: Gateway) -> None:
        self.app = app
        self._lifespan: AbstractAsyncContextManager[None] | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lifespan = self.app.lifespan(self.app)
        loop.run_until_complete(self._lifespan.__aenter__())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lifespan is not None:
            loop.run_until_complete(self._lifespan.__aexit__(None, None, None))

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in scope.headers.items()
        ]
        asgi_scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": scope.path,
            "raw_path": scope.path.encode("latin-1"),
            "query_string": scope.query_string.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": client_address(scope.client),
            "server": client_address(scope.server),
        }
        exchange = _Exchange(protocol, "content-length" in scope.headers)
        await self.app(asgi_scope, exchange.receive, exchange.send)


def create_rsgi_app() -> RSGIGateway:
    """Granian factory: the gateway, configured from the environment, as an RSGI app."""
    return RSGIGateway(create_app())
