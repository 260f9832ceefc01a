"""Raw ASGI senders of the gateway's answers (the bodies are `clickstream_contract.answers`)."""

from __future__ import annotations

from typing import Final

import msgspec

from clickstream_contract.answers import ErrorResponse, IngestResponse, Rejection
from gateway.types import Headers, Send

_encode = msgspec.json.Encoder().encode
JSON: Final = (b"content-type", b"application/json")
# The common answer to a valid single event, encoded once.
ONE_ACCEPTED: Final = _encode(IngestResponse(accepted=1, rejected=[]))


async def send_json(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_accepted(
    send: Send, accepted: int, rejected: list[Rejection], headers: Headers
) -> None:
    if accepted == 1 and not rejected:
        body = ONE_ACCEPTED
    else:
        body = _encode(IngestResponse(accepted=accepted, rejected=rejected))
    await send_json(send, 202, body, headers)


async def send_error(send: Send, status: int, message: str, headers: Headers) -> None:
    await send_json(send, status, _encode(ErrorResponse(error=message)), headers)
