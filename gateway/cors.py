"""CORS for the ingest routes: configured origins only; beacons (no preflight) need none."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from gateway.types import Headers

# x-retry-count: analytics.js numbers its retries (a preflight refusing it would drop them).
ALLOWED_HEADERS: Final = (
    b"authorization, content-type, content-encoding, x-write-key, x-retry-count"
)
MAX_AGE_S: Final = b"600"


class Cors:
    def __init__(self, origins: Iterable[str]) -> None:
        origins = list(origins)
        self._any = "*" in origins
        self._origins = frozenset(origin.encode() for origin in origins if origin != "*")

    def allows(self, origin: bytes) -> bool:
        return bool(origin) and (self._any or origin in self._origins)

    def headers(self, origin: bytes) -> Headers:
        """Headers for an actual (non-preflight) response to `origin`."""
        if not self.allows(origin):
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", b"retry-after"),
            (b"vary", b"origin"),
        ]

    def preflight_headers(self, origin: bytes) -> Headers:
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", MAX_AGE_S),
            (b"vary", b"origin"),
        ]
