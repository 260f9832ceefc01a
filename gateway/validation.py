"""Validating request bodies against the event contract, one event at a time.

Each event is checked on its own raw JSON bytes (`msgspec.Raw` inside a batch) with one typed
decoder, so a bad event is refused alone with msgspec's message, which names the rule and the
JSON path (`Expected `str` of length <= 128 - at `$.user_id``). Valid events are published as
the exact bytes the client sent; nothing is re-encoded. A batch is first tried in one decode of
all its events (one C call instead of a Python loop); only a batch
holding a bad event is checked event by event, which gives each error its index and own path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from clickstream_contract.answers import Rejection
from clickstream_contract.event import Batch, Event
from gateway.parsing import HTTPError

_event_decoder = msgspec.json.Decoder(Event)
_batch_decoder = msgspec.json.Decoder(Batch)
_events_decoder = msgspec.json.Decoder(list[Event])


@dataclass(slots=True)
class Checked:
    """Outcome of one request: the events to publish, and the refused ones with reasons."""

    good: list[bytes] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [rejection.error for rejection in self.rejected]


def event_error(raw: bytes | msgspec.Raw) -> str | None:
    """None when `raw` is a valid event, else what is wrong and where."""
    try:
        _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return str(exc)
    except msgspec.DecodeError as exc:
        return f"invalid JSON: {exc}"
    return None


def all_valid(events: list[bytes]) -> bool:
    """True when every one of `events` (each a JSON value) is a valid event."""
    try:
        _events_decoder.decode(b"[" + b",".join(events) + b"]")
    except msgspec.DecodeError:  # ValidationError included
        return False
    return True


def check_single(body: bytes, max_event_bytes: int) -> Checked:
    """Body of `POST /v1/events`: one event, valid JSON (400) within the size limit (413)."""
    if len(body) > max_event_bytes:
        raise HTTPError(413, f"event is {len(body)} bytes, over the {max_event_bytes}-byte limit")
    checked = Checked()
    try:
        _event_decoder.decode(body)
    except msgspec.ValidationError as exc:
        checked.bad.append(body)
        checked.rejected.append(Rejection(0, str(exc)))
    except msgspec.DecodeError as exc:
        raise HTTPError(400, f"body is not valid JSON: {exc}") from None
    else:
        checked.good.append(body)
    return checked


def check_batch(body: bytes, max_event_bytes: int, max_batch_events: int) -> Checked:
    """Body of `POST /v1/batch`: `{"events": [...]}`; each event accepted or rejected alone."""
    try:
        batch = _batch_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise HTTPError(400, f'body is not a batch {{"events": [...]}}: {exc}') from None
    if len(batch.events) > max_batch_events:
        raise HTTPError(
            413, f"batch has {len(batch.events)} events, over the {max_batch_events}-event limit"
        )
    checked = Checked()
    events = [bytes(raw) for raw in batch.events]
    if max(map(len, events), default=0) <= max_event_bytes and all_valid(events):
        checked.good = events
        return checked
    for index, data in enumerate(events):
        if len(data) > max_event_bytes:
            error: str | None = f"event is {len(data)} bytes, over the {max_event_bytes}-byte limit"
        else:
            error = event_error(data)
        if error is None:
            checked.good.append(data)
        else:
            checked.bad.append(data)
            checked.rejected.append(Rejection(index, error))
    return checked
