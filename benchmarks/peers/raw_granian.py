"""Raw Granian ASGI peer: reads the body and answers 202, nothing else (the server's ceiling)."""

from __future__ import annotations

from typing import Any

BODY = b'{"accepted":1,"rejected":[]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    await send({"type": "http.response.start", "status": 202, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


class RSGIApp:
    """The same for Granian's native RSGI interface (`--interface rsgi raw_granian:rsgi_app`)."""

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        await protocol()
        protocol.response_bytes(202, RSGI_HEADERS, BODY)


RSGI_HEADERS = [("content-type", "application/json")]
rsgi_app = RSGIApp()
