"""The gateway's answers on the wire: what it sends, and what every client decodes.

These are the bodies of `POST /v1/events` and `/v1/batch` answers (also in the gateway's
OpenAPI document, under these names).
"""

from __future__ import annotations

import msgspec


class Rejection(msgspec.Struct):
    """One refused event of a request: its index in the request and the rule it broke."""

    index: int
    error: str


class IngestResponse(msgspec.Struct):
    """The body of a 202: how many events were durably published, and which were refused."""

    accepted: int
    rejected: list[Rejection]


class ErrorResponse(msgspec.Struct):
    """The body of every 4xx and 5xx answer."""

    error: str
