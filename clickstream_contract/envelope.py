"""The Pub/Sub message format between gateway and processor: a versioned msgpack envelope.

One message carries the events of one or more HTTP requests. Each request is a `Group`: what
the server stamped (received_at, source, client IP, user agent) and the events exactly as the
client sent them, as validated JSON bytes (the gateway never re-encodes them).

The same envelope carries bad events on the `events-bad` topic; there `reasons[i]` says why
`events[i]` was refused. Message attributes name the encoding so any consumer can decode it:

    content_type    application/vnd.clickstream.envelope+msgpack
    schema_version  "1"
    kind            "events" | "bad"
    event_count     number of events in the message
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

SCHEMA_VERSION: Final = 1
CONTENT_TYPE: Final = "application/vnd.clickstream.envelope+msgpack"
# Pub/Sub allows 10 MB per message and per publish request; the gateway cuts far below that.
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024

Kind = Literal["events", "bad"]


class Group(msgspec.Struct, omit_defaults=True):
    """The events of one HTTP request and what only the server knows about them."""

    received_at: datetime
    source: str
    events: list[bytes]
    client_ip: str | None = None
    user_agent: str | None = None
    reasons: list[str] = []


class Envelope(msgspec.Struct, omit_defaults=True):
    v: int
    kind: Kind
    groups: list[Group]

    @property
    def event_count(self) -> int:
        return sum(len(group.events) for group in self.groups)


class EnvelopeError(ValueError):
    """The message can never be processed (wrong format or unknown version)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def attributes(kind: Kind, event_count: int) -> dict[str, str]:
    return {
        "content_type": CONTENT_TYPE,
        "schema_version": str(SCHEMA_VERSION),
        "kind": kind,
        "event_count": str(event_count),
    }


def encode(kind: Kind, groups: list[Group]) -> bytes:
    return _encoder.encode(Envelope(v=SCHEMA_VERSION, kind=kind, groups=groups))


def decode(data: bytes, attrs: dict[str, str] | None = None) -> Envelope:
    """Decode a message; raise `EnvelopeError` for anything no retry can fix."""
    if attrs is not None:
        content_type = attrs.get("content_type", CONTENT_TYPE)
        if content_type != CONTENT_TYPE:
            raise EnvelopeError(f"unsupported content_type {content_type!r}")
        version = attrs.get("schema_version", str(SCHEMA_VERSION))
        if version != str(SCHEMA_VERSION):
            raise EnvelopeError(f"unsupported schema_version {version!r}")
    try:
        envelope = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"undecodable envelope: {exc}") from None
    if envelope.v != SCHEMA_VERSION:
        raise EnvelopeError(f"unsupported envelope version {envelope.v}")
    return envelope
