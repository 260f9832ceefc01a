"""The processing core shared by both shells (streaming-pull worker and Cloud Function).

    messages -> decode envelopes -> validate events (the contract's decoder) -> enrich
             -> PostgreSQL (sessions, events, aggregates) -> other sinks (BigQuery) -> caller acks

`Processor.process` returns normally only when every sink has committed the batch; then the
shell acks. It raises on transient failures (database down, network), and the shell nacks (or,
in a function, lets the invocation fail) so Pub/Sub redelivers; the sinks make that harmless.
A message that can never succeed becomes a `BadEvent` with its raw bytes and is acked:
an undecodable envelope or unknown schema version ("envelope"), an event the contract refuses
("validation"), or a message a sink refuses for its content ("processing": PostgreSQL's data
errors, a row BigQuery refuses or that cannot be encoded, see `PERMANENT_ERRORS`; found by
retrying a failing batch message by message, so one poison message never holds back the
others). PostgreSQL commits before BigQuery appends, so a message BigQuery refuses stays
counted in PostgreSQL; its bad event keeps the raw bytes and the reason. Outages (connections,
timeouts, deadlocks, BigQuery unavailable or misconfigured) raise, and the batch is redelivered
whole.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import msgspec

from clickstream_contract import envelope
from clickstream_contract.event import Event
from processor.enrich import enrich
from processor.records import BadEvent, EnrichedEvent, RefusedData, unique_events

log = logging.getLogger(__name__)


class Sink(Protocol):
    async def write(self, events: list[EnrichedEvent], bad: list[BadEvent]) -> object: ...


@dataclass(frozen=True, slots=True)
class Message:
    """What a shell received from Pub/Sub, independent of the client library."""

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    publish_time: datetime | None = None


@dataclass(slots=True)
class Batch:
    events: list[EnrichedEvent] = field(default_factory=list)
    bad: list[BadEvent] = field(default_factory=list)


_event_decoder = msgspec.json.Decoder(Event)


def decode_into(batch: Batch, message: Message) -> None:
    """Append the message's events (enriched) and bad events to `batch`."""
    try:
        env = envelope.decode(message.data, dict(message.attributes))
    except envelope.EnvelopeError as exc:
        batch.bad.append(
            BadEvent(
                received_at=message.publish_time or datetime.now(UTC),
                source=message.attributes.get("source"),
                reason=str(exc),
                reason_class="envelope",
                raw=message.data,
                message_key=message.message_id,
            )
        )
        return
    append, decode_event = batch.events.append, _event_decoder.decode
    for g, group in enumerate(env.groups):
        if env.kind == "bad":
            for i, raw in enumerate(group.events):
                reason = group.reasons[i] if i < len(group.reasons) else "refused at the gateway"
                key = f"{message.message_id}/{g}/{i}"
                batch.bad.append(_bad(group, raw, reason, "validation", key))
            continue
        for i, raw in enumerate(group.events):
            try:
                event = decode_event(raw)
            except msgspec.DecodeError as exc:  # the contract changed under a queued message
                key = f"{message.message_id}/{g}/{i}"
                batch.bad.append(_bad(group, raw, str(exc), "validation", key))
                continue
            append(enrich(event, group))


def _bad(group: envelope.Group, raw: bytes, reason: str, reason_class: str, key: str) -> BadEvent:
    return BadEvent(
        received_at=group.received_at,
        source=group.source,
        reason=reason,
        reason_class=reason_class,
        raw=raw,
        client_ip=group.client_ip,
        user_agent=group.user_agent,
        message_key=key,
    )


def decode(messages: Sequence[Message]) -> Batch:
    """The messages' events, each once (a gateway's retry may sit beside its first try in one
    batch: every sink takes the event once, as the PostgreSQL sink stored and stamped it)."""
    batch = Batch()
    for message in messages:
        decode_into(batch, message)
    batch.events = unique_events(batch.events)
    return batch


# Errors a sink raises for the data itself: PostgreSQL's data errors (e.g. a NUL character in
# text, a number out of range) and every sink's RefusedData (BigQuery's RowsRefused and
# RowEncodingError, the PostgreSQL sink's own checks). Retrying the same message can never
# succeed. Everything else (connections, deadlocks, BigQuery unavailable...) is transient.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, RefusedData)


class Processor:
    """Decode, enrich and write batches: PostgreSQL first (it assigns sessions), then others."""

    def __init__(self, postgres: Sink, others: Sequence[Sink] = ()) -> None:
        self.sinks = [postgres, *others]

    async def process(self, messages: Sequence[Message]) -> None:
        batch = decode(messages)
        try:
            await self._write(batch)
        except PERMANENT_ERRORS as exc:
            if len(messages) > 1:
                log.warning("batch refused (%s); retrying message by message", exc)
                for message in messages:
                    await self.process([message])
                return
            log.error("message %s refused by a sink: %s", messages[0].message_id, exc)
            await self._set_aside(_refused(messages[0], exc))

    async def _write(self, batch: Batch) -> None:
        if not batch.events and not batch.bad:
            return
        for sink in self.sinks:
            await sink.write(batch.events, batch.bad)

    async def _set_aside(self, bad: BadEvent) -> None:
        """Store a refused message as a bad event: in PostgreSQL (the store of record, raising
        as any write does), then in every other sink that takes it (BigQuery may refuse the
        raw message too, for the same reason it refused its rows)."""
        postgres, *others = self.sinks
        await postgres.write([], [bad])
        for sink in others:
            try:
                await sink.write([], [bad])
            except PERMANENT_ERRORS as exc:
                log.error("a sink refused bad event %s too: %s", bad.message_key, exc)


def _refused(message: Message, exc: BaseException) -> BadEvent:
    return BadEvent(
        received_at=message.publish_time or datetime.now(UTC),
        source=None,
        reason=f"{type(exc).__name__}: {exc}",
        reason_class="processing",
        raw=message.data,
        message_key=message.message_id,
    )
