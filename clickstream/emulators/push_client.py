"""The built-in emulator's HTTP client for push deliveries: POSTs over keep-alive connections.

Push runs pushed every message through httpx, and its connection pool spent most of the
emulator's CPU choosing a connection (benchmarks/README.md, push topology): the endpoint
(functions-framework) waited on the emulator. A push needs one request shape and the status of
its answer, so this client is that and no more: HTTP/1.1 over asyncio streams, one idle
connection reused per push, the response's body read (Content-Length, chunked, or to the end)
and dropped. Plain http only: push endpoints of a local stack are loopback addresses.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class BadResponse(ValueError):
    """The endpoint answered something that is not an HTTP/1.x response, or cannot be reached
    by this client (not http://)."""


class PushClient:
    """POSTs JSON bodies to one endpoint; each call returns the answer's status code, or raises
    `OSError`, `TimeoutError`, `EOFError` or `ValueError` when there is none."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        url = urlsplit(endpoint)
        self.unreachable = url.scheme != "http" or not url.hostname
        self.host, self.port = url.hostname or "", url.port or 80
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.head = (
            f"POST {target} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.timeout = timeout
        self.idle: list[Connection] = []
        self.closed = False

    async def post(self, body: bytes) -> int:
        if self.unreachable:
            raise BadResponse(f"push endpoint {self.endpoint!r}: only http://host[:port]/path")
        async with asyncio.timeout(self.timeout):
            while self.idle:
                connection = self.idle.pop()
                if not connection[0].at_eof():  # else the endpoint closed it since (idle)
                    return await self._exchange(connection, body)
                connection[1].close()
            return await self._exchange(await asyncio.open_connection(self.host, self.port), body)

    async def _exchange(self, connection: Connection, body: bytes) -> int:
        reader, writer = connection
        try:
            writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
            status, keep = await _read_response(reader)
        except BaseException:
            writer.close()
            raise
        if keep and not self.closed:  # a push that ends after `close` keeps no connection
            self.idle.append(connection)
        else:
            writer.close()
        return status

    def close(self) -> None:
        self.closed = True
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the connection can carry another request); the body is read and
    dropped. Interim (1xx) answers are skipped."""
    while True:
        status_line = await reader.readline()
        if not status_line:
            raise EOFError("the endpoint closed the connection without an answer")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n"):
            if not line:
                raise EOFError("the endpoint closed the connection within the headers")
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if status >= 200:
            break
    keep = parts[0] == b"HTTP/1.1" and headers.get(b"connection") != b"close"
    if status in (204, 304):
        return status, keep
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
            pass
    elif b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    else:  # delimited by the end of the connection
        await reader.read()
        keep = False
    return status, keep
