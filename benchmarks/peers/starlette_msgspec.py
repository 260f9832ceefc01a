"""Plain Starlette + msgspec peer: the contract's own decoders behind ordinary Starlette routes
(`Request`, `await request.body()`, `JSONResponse`), validating without publishing and without
the gateway's hot-path work (raw ASGI routes, per-event raw bytes, RSGI, batched publish)."""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clickstream_contract.event import Event

event_decoder = msgspec.json.Decoder(Event)


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[Event]


batch_decoder = msgspec.json.Decoder(Batch)


def refused(request: Request) -> JSONResponse | None:
    if request.headers.get("authorization") != "Bearer bench":
        return JSONResponse({"error": "unknown write key"}, status_code=401)
    return None


async def one(request: Request) -> JSONResponse:
    if (error := refused(request)) is not None:
        return error
    try:
        event_decoder.decode(await request.body())
    except msgspec.DecodeError as exc:  # ValidationError included
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"accepted": 1, "rejected": []}, status_code=202)


async def batch(request: Request) -> JSONResponse:
    if (error := refused(request)) is not None:
        return error
    try:
        body = batch_decoder.decode(await request.body())
    except msgspec.DecodeError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"accepted": len(body.events), "rejected": []}, status_code=202)


app = Starlette(
    routes=[Route("/v1/events", one, methods=["POST"]), Route("/v1/batch", batch, methods=["POST"])]
)
