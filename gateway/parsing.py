"""Request parsing shared by every ingest route: headers, write key, body, gzip, limits.

Plain functions over the raw ASGI scope and `receive`, so any route (the clickstream API, and
later Segment-compatible ones) reuses them. Each failure raises `HTTPError` with the status and
a message that says what was wrong; the caller turns it into a response.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

JSON_MEDIA_TYPES: Final = frozenset({"application/json", "text/plain"})


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass(slots=True)
class RequestHeaders:
    """The few headers the ingest routes read, picked out in one pass."""

    content_type: bytes = b""
    content_encoding: bytes = b""
    content_length: int | None = None
    authorization: bytes = b""
    write_key: bytes = b""
    user_agent: bytes = b""
    origin: bytes = b""
    forwarded_for: list[bytes] = field(default_factory=list)  # every X-Forwarded-For, in order


def read_headers(scope: Mapping[str, Any]) -> RequestHeaders:
    found = RequestHeaders()
    for name, value in scope["headers"]:
        # ASGI servers lower-case header names.
        if name == b"content-type":
            found.content_type = value
        elif name == b"authorization":
            found.authorization = value
        elif name == b"content-length":
            try:
                found.content_length = int(value)
            except ValueError:
                raise HTTPError(400, "invalid Content-Length header") from None
        elif name == b"content-encoding":
            found.content_encoding = value
        elif name == b"user-agent":
            found.user_agent = value
        elif name == b"x-write-key":
            found.write_key = value
        elif name == b"origin":
            found.origin = value
        elif name == b"x-forwarded-for":
            found.forwarded_for.append(value)
    return found


class WriteKeys:
    """Write key -> source name, looked up in constant time over all configured keys."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = [(key.encode(), source) for key, source in keys.items()]

    def source_for(self, key: bytes) -> str | None:
        found = None
        # No early exit: the time taken must not reveal which key (or prefix) matched.
        for candidate, source in self._keys:
            if hmac.compare_digest(candidate, key):
                found = source
        return found


def presented_key(headers: RequestHeaders, query_string: bytes) -> bytes:
    """The write key from Bearer, Basic (key as username), X-Write-Key, or ?writeKey=."""
    auth = headers.authorization
    if auth:
        scheme, _, credentials = auth.strip().partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer":
            return credentials.strip()
        if scheme == b"basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise HTTPError(401, "malformed Basic credentials") from None
            return decoded.partition(b":")[0]
        raise HTTPError(401, "unsupported Authorization scheme; use Bearer or Basic")
    if headers.write_key:
        return headers.write_key.strip()
    if query_string:
        values = parse_qs(query_string.decode("latin-1")).get("writeKey")
        if values:
            return values[0].encode("latin-1")
    return b""


def authenticate(
    headers: RequestHeaders, query_string: bytes, keys: WriteKeys, body_key: bytes = b""
) -> str:
    """The source name for the request's write key (else `body_key`, the key analytics.js puts
    in its body); 401 when missing or unknown."""
    key = presented_key(headers, query_string) or body_key
    if not key:
        raise HTTPError(
            401,
            "missing write key: send Authorization: Bearer KEY, Basic KEY:, "
            "X-Write-Key, or ?writeKey= (analytics.js: writeKey in the body)",
            [(b"www-authenticate", b'Bearer realm="clickstream"')],
        )
    source = keys.source_for(key)
    if source is None:
        raise HTTPError(
            401, "unknown write key", [(b"www-authenticate", b'Bearer realm="clickstream"')]
        )
    return source


def check_content_type(content_type: bytes) -> None:
    """JSON, or text/plain carrying JSON (what navigator.sendBeacon sends for a string)."""
    media_type = content_type.partition(b";")[0].strip().lower().decode("latin-1")
    if media_type not in JSON_MEDIA_TYPES:
        shown = media_type or "none"
        raise HTTPError(
            415, f"unsupported content type {shown}; send application/json or text/plain"
        )


def check_content_encoding(content_encoding: bytes) -> bool:
    """True for gzip; identity or none is plain; anything else is refused with 415."""
    encoding = content_encoding.strip().lower()
    if encoding == b"gzip":
        return True
    if encoding in (b"", b"identity"):
        return False
    raise HTTPError(415, f"unsupported Content-Encoding {encoding.decode('latin-1')}; use gzip")


async def read_body(receive: Any, content_length: int | None, limit: int) -> bytes:
    """The whole request body; 413 as soon as it is known to exceed `limit` bytes."""
    if content_length is not None and content_length > limit:
        raise HTTPError(413, f"request body is {content_length} bytes, over the {limit}-byte limit")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise HTTPError(413, f"request body is over the {limit}-byte limit")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one gzip stream, never producing more than `limit` bytes (bombs get 413)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, f"corrupt gzip body: {exc}") from None
    if len(body) > limit:
        raise HTTPError(413, f"decompressed body is over the {limit}-byte limit")
    if not inflater.eof:
        raise HTTPError(400, "truncated gzip body")
    if inflater.unused_data:
        raise HTTPError(400, "unexpected data after the gzip stream")
    return body


async def read_json_body(receive: Any, headers: RequestHeaders, limit: int) -> bytes:
    """Content type, encoding and size checks, then the (decompressed) body bytes."""
    check_content_type(headers.content_type)
    gzipped = check_content_encoding(headers.content_encoding)
    body = await read_body(receive, headers.content_length, limit)
    if gzipped:
        body = gunzip(body, limit)
    check_utf8(body)
    return body


def check_utf8(body: bytes) -> None:
    """JSON is UTF-8 (RFC 8259); msgspec would raise UnicodeDecodeError deep inside instead."""
    if body.startswith(b"\xef\xbb\xbf"):
        raise HTTPError(400, "body starts with a byte-order mark; send JSON without one")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPError(400, f"body is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
