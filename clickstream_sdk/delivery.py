"""What both Python clients (and the load generator) share about talking to the gateway.

Request bodies are built from already-encoded event JSON, so a retry resends the very same
bytes (same `event_id`s): the platform deduplicates by `event_id`, so a retry never double
counts. Responses are classified once here: accepted, retry later, or give up.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import msgspec

from clickstream_contract.answers import IngestResponse

EVENTS_PATH: Final = "/v1/events"
BATCH_PATH: Final = "/v1/batch"
# The gateway's default limits (issue 3): 32 KB per event, 512 KB per request after
# decompression, 500 events per batch. Clients stay a little below them.
MAX_EVENT_BYTES: Final = 32 * 1024
MAX_REQUEST_BYTES: Final = 500 * 1024
MAX_BATCH_EVENTS: Final = 500
# Below this size gzip costs more CPU than it saves on the wire.
GZIP_MIN_BYTES: Final = 1024
# Statuses that mean "not now": backpressure, an unreachable Pub/Sub, a restarting gateway.
RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


_accepted_decoder = msgspec.json.Decoder(IngestResponse)


def batch_body(events: Sequence[bytes]) -> bytes:
    """`{"events": [...]}` from encoded events, without decoding them again."""
    return b'{"events":[' + b",".join(events) + b"]}"


def request_for(
    events: Sequence[bytes], *, compress: bool = True
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) for sending `events`: one event alone, several as a batch."""
    if len(events) == 1:
        path, body = EVENTS_PATH, events[0]
    else:
        path, body = BATCH_PATH, batch_body(events)
    headers = {"Content-Type": "application/json"}
    if compress and len(body) >= GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return path, body, headers


def auth_headers(write_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {write_key}"}


def parse_accepted(body: bytes) -> IngestResponse:
    return _accepted_decoder.decode(body)


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), if any."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential backoff ("full jitter") that never retries before `Retry-After`.

    Attempt n (0-based) waits a random time in [0, min(cap, base * 2**n)]; when the server
    sent `Retry-After`, at least that long (capped at `cap` so one bad header cannot stall a
    client for hours).
    """

    base: float = 0.5
    cap: float = 30.0
    max_retries: int = 10

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        jittered = rng.uniform(0, min(self.cap, self.base * 2**attempt))
        if retry_after is None:
            return jittered
        return max(min(retry_after, self.cap), jittered)


DEFAULT_BACKOFF: Final = Backoff()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after one attempt: `done` (202), `retry`, `split` (413 on a batch), `fail`."""

    action: str
    accepted: IngestResponse | None = None
    retry_after: float | None = None
    reason: str = ""


def judge(status: int, headers: Mapping[str, str], body: bytes, events: int) -> Verdict:
    """Classify the gateway's answer to a request that carried `events` events."""
    if 200 <= status < 300:
        try:
            return Verdict("done", accepted=parse_accepted(body))
        except msgspec.DecodeError:
            # A 2xx without the documented body: the events were taken; count them all.
            return Verdict("done", accepted=IngestResponse(accepted=events, rejected=[]))
    reason = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    if status == 413 and events > 1:
        return Verdict("split", reason=reason)
    if status in RETRYABLE_STATUSES:
        return Verdict("retry", retry_after=parse_retry_after(headers), reason=reason)
    return Verdict("fail", reason=reason)


@dataclass(frozen=True, slots=True)
class Post:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


# The gateway's reply to a `Post` as the driver got it: (status, headers, body), or a transport
# error's description.
Reply = tuple[int, Mapping[str, str], bytes] | str
# Called once per settled batch: (events, the 202 body) on success, (events, None) on failure.
Settled = Callable[[Sequence[bytes], IngestResponse | None, str], None]


def delivery_plan(
    events: Sequence[bytes],
    *,
    compress: bool,
    backoff: Backoff,
    rng: random.Random,
    settled: Settled,
    aborted: Callable[[], bool] = lambda: False,
) -> Generator[Post | Sleep, Reply | None, None]:
    """The retry policy without I/O: yields `Post`s and `Sleep`s, the caller performs them.

    One policy serves the threaded client, the asyncio client and the load generator. Retries
    resend the same bytes; a 413 on a batch splits it in halves; after `backoff.max_retries`
    retries (or once `aborted()`), the events are settled as failed.
    """
    path, body, headers = request_for(events, compress=compress)
    attempt = 0
    while True:
        answer = yield Post(path, body, headers)
        if isinstance(answer, tuple):
            verdict = judge(*answer, len(events))
        else:
            verdict = Verdict("retry", reason=str(answer))
        if verdict.action == "done":
            settled(events, verdict.accepted, "")
            return
        if verdict.action == "split":
            half = len(events) // 2
            for part in (events[:half], events[half:]):
                yield from delivery_plan(
                    part,
                    compress=compress,
                    backoff=backoff,
                    rng=rng,
                    settled=settled,
                    aborted=aborted,
                )
            return
        if verdict.action == "fail" or attempt >= backoff.max_retries or aborted():
            settled(events, None, f"{verdict.reason} (after {attempt + 1} attempts)")
            return
        yield Sleep(backoff.delay(attempt, verdict.retry_after, rng))
        attempt += 1
