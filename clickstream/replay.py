"""`clickstream replay bad-events|dead-letters`: send kept events back through the pipeline.

After an incident (a tracker sent a field in the wrong shape, a contract rule was too strict,
PostgreSQL was down long enough for messages to be dead-lettered) and its fix, the events kept
aside go back to the `events` topic and are counted, once:

- `bad-events` reads PostgreSQL's `bad_events` (raw payload, received_at, source, client IP and
  user agent as the gateway stamped them), checks each against today's contract with the
  gateway's own validation (a message of Segment's API mapped as its routes map it),
  republishes those that pass in the gateway's envelope, and stamps them `replayed_at` so a
  second run skips them. A row refused as a whole message ("envelope",
  "processing") is replayed when the message now decodes and all its events pass.
- `dead-letters` drains the dead-letter hold subscription back into the topic each message came
  from; a message that cannot be decoded stays in the subscription, with its reason reported.

Counting once rests on the processor's exactly-once write (events keyed by `event_id`): a run
stopped between publishing and stamping publishes again next time, and the copies are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from clickstream_contract import envelope
from clickstream_contract.config import LOCAL_PROJECT, DatabaseConfigError, Settings

if TYPE_CHECKING:
    import asyncpg

# Bad events read and published per round: one query, one stamp, a few messages.
PAGE_ROWS: Final = 1000
# Events per republished message, as the gateway packs them at most.
MESSAGE_EVENTS: Final = 1000
MESSAGE_BYTES: Final = 1024 * 1024
# Dead letters pulled per round, and how long a pull waits for more before the run ends.
PULL_MESSAGES: Final = 100
PULL_WAIT_S: Final = 5.0
# Marks a republished message; the processor ignores attributes it does not know.
REPLAY_ATTRIBUTE: Final = "replayed_from"
# What Pub/Sub adds when it dead-letters a message; not carried back to the topic.
DEAD_LETTER_ATTRIBUTE_PREFIX: Final = "CloudPubSubDeadLetter"

# A message to publish: its data and attributes.
Outgoing = tuple[bytes, dict[str, str]]


class SettingError(Exception):
    """A setting the command needs is missing: the message says what to set."""


@dataclass
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None
    source: str | None = None


@dataclass
class BadEventsReport:
    dry_run: bool
    # Bad events that pass today's contract, by the reason they were refused for.
    passed: Counter[str] = field(default_factory=Counter)
    # Bad events that still fail, by today's reason.
    failing: Counter[str] = field(default_factory=Counter)
    events: int = 0  # events republished (a whole-message row may hold several)

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "passed": sum(self.passed.values()),
            "still_failing": sum(self.failing.values()),
            "events_published": self.events,
            "passed_by_reason": dict(self.passed.most_common()),
            "still_failing_by_reason": dict(self.failing.most_common()),
        }

    def text(self) -> str:
        passed, failing = sum(self.passed.values()), sum(self.failing.values())
        verb = "would be sent" if self.dry_run else "sent"
        lines = [
            f"{passed:,} bad events pass today's contract ({self.events:,} events {verb} back "
            f"to the events topic); {failing:,} still fail"
            + (" (dry run: nothing published or marked)" if self.dry_run else "")
        ]
        for title, counts in (
            ("passed, by the reason they were refused for:", self.passed),
            ("still failing, by today's reason:", self.failing),
        ):
            if counts:
                lines.append(f"  {title}")
                lines += [f"    {n:,} x {reason}" for reason, n in counts.most_common()]
        return "\n".join(lines)


@dataclass
class DeadLetterReport:
    replayed: int = 0  # messages published back and acknowledged
    events: int = 0
    # Messages left in the subscription, by why they cannot be decoded.
    kept: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "replayed_messages": self.replayed,
            "events": self.events,
            "kept_messages": sum(self.kept.values()),
            "kept_by_reason": dict(self.kept.most_common()),
        }

    def text(self) -> str:
        kept = sum(self.kept.values())
        lines = [
            f"{self.replayed:,} dead-lettered messages ({self.events:,} events) sent back; "
            f"{kept:,} kept in the dead-letter subscription"
        ]
        lines += [f"  {n:,} x {reason}" for reason, n in self.kept.most_common()]
        return "\n".join(lines)

    def progress_line(self) -> str:
        return (
            f"dead letters: {self.replayed:,} sent back ({self.events:,} events), "
            f"{sum(self.kept.values()):,} kept"
        )


# --- settings ---------------------------------------------------------------------------------


def replay_settings(
    env: Mapping[str, str] = os.environ, *, database: bool, pubsub: bool
) -> Settings:
    """The settings from `env` and the running local stack; a missing one is a `SettingError`."""
    from clickstream.local_state import stack_env

    settings = Settings.from_env(stack_env(env))
    if database and not settings.database_url:
        raise SettingError(
            "DATABASE_URL is not set: export it (with CLICKSTREAM_DB_PASSWORD for Cloud SQL), "
            "or start the local stack with ./dev up"
        )
    if pubsub and settings.pubsub_emulator_host is None and settings.project == LOCAL_PROJECT:
        raise SettingError(
            "no Pub/Sub to publish to: set GOOGLE_CLOUD_PROJECT (Google Cloud) or "
            "PUBSUB_EMULATOR_HOST (an emulator), or start the local stack with ./dev up"
        )
    return settings


# --- publishing -------------------------------------------------------------------------------


class Publisher:
    """The generated async publisher client, on the emulator's channel when one is set."""

    def __init__(self, settings: Settings) -> None:
        from gateway.pubsub import publisher_async_client

        self.settings = settings
        self.client = publisher_async_client(settings)

    async def publish(self, topic: str, messages: Sequence[Outgoing]) -> None:
        """Publish each (data, attributes), one request each (a request holds 10 MB at most),
        and wait until Pub/Sub has every one (raises otherwise)."""
        from google.pubsub_v1 import PubsubMessage

        path = self.settings.topic_path(topic)
        await asyncio.gather(
            *(
                self.client.publish(
                    topic=path, messages=[PubsubMessage(data=data, attributes=attributes)]
                )
                for data, attributes in messages
            )
        )

    async def close(self) -> None:
        await self.client.transport.close()


# --- bad events -------------------------------------------------------------------------------

SELECT_BAD: Final = """
SELECT id, received_at, source, reason, reason_class, raw, client_ip, user_agent
FROM bad_events
WHERE replayed_at IS NULL AND id > $1
  AND ($2::timestamptz IS NULL OR received_at >= $2)
  AND ($3::timestamptz IS NULL OR received_at < $3)
  AND ($4::text IS NULL OR reason_class = $4 OR strpos(lower(reason), lower($4)) > 0)
  AND ($5::text IS NULL OR source = $5)
ORDER BY id
LIMIT $6
"""

MARK_REPLAYED: Final = (
    "UPDATE bad_events SET replayed_at = now() WHERE id = ANY($1::bigint[]) AND replayed_at IS NULL"
)


def today_error(raw: bytes) -> str | None:
    """Why today's contract refuses one event (the gateway's own check), or None."""
    from gateway.validation import event_error

    return event_error(raw)


# Fields of Segment's messages that our contract does not have: a bad event holding one came
# in through the gateway's Segment routes, which keep the message's own bytes.
SEGMENT_FIELDS: Final = frozenset({"type", "messageId", "userId", "anonymousId", "timestamp"})


def today_event(raw: bytes, source: str, received_at: datetime) -> tuple[bytes | None, str]:
    """The event today's gateway publishes for a refused `raw` (ours as is, or a Segment
    message mapped as its routes map it), or None and why it still refuses it."""
    from gateway import segment
    from gateway.validation import Checked

    error = today_error(raw)
    if error is None:
        return raw, ""
    try:
        fields = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None, error
    if not isinstance(fields, dict) or not SEGMENT_FIELDS & fields.keys():
        return None, error
    # The message's own `type`: a single-message route's type (its path) is not kept.
    checked = Checked()
    segment.check_message(
        checked, 0, raw, None, source, received_at, None, segment.MAX_MESSAGE_BYTES
    )
    if checked.good:
        return checked.good[0], ""
    return None, checked.reasons[0]


def replayable(row: asyncpg.Record) -> tuple[list[envelope.Group], str | None]:
    """The groups to publish for one kept bad event, or today's reason it still fails."""
    raw = bytes(row["raw"])
    if row["reason_class"] == "validation":  # one event as the client sent it
        source = row["source"] or ""
        event, error = today_event(raw, source, row["received_at"])
        if event is None:
            return [], error
        group = envelope.Group(
            received_at=row["received_at"],
            source=source,
            events=[event],
            client_ip=row["client_ip"],
            user_agent=row["user_agent"],
        )
        return [group], None
    # A whole Pub/Sub message the processor could not take ("envelope", "processing").
    try:
        kept = envelope.decode(raw)
    except envelope.EnvelopeError as exc:
        return [], str(exc)
    for group in kept.groups:
        for member in group.events:
            if (refused := today_error(member)) is not None:
                return [], refused
    return [msgspec.structs.replace(group, reasons=[]) for group in kept.groups], None


def messages_of(groups: Sequence[envelope.Group]) -> list[Outgoing]:
    """Envelopes of the `events` kind holding `groups` with the gateway's attributes and the
    replay mark; adjacent groups of one request merged, each message within MESSAGE_EVENTS
    events and about MESSAGE_BYTES."""
    merged: list[envelope.Group] = []
    for group in groups:
        last = merged[-1] if merged else None
        if (
            last is not None
            and (last.received_at, last.source, last.client_ip, last.user_agent)
            == (group.received_at, group.source, group.client_ip, group.user_agent)
            and len(last.events) + len(group.events) <= MESSAGE_EVENTS
        ):
            last.events.extend(group.events)
        else:
            merged.append(msgspec.structs.replace(group, events=list(group.events)))
    messages: list[Outgoing] = []
    pending: list[envelope.Group] = []
    events = size = 0

    def close_message() -> None:
        attributes = {**envelope.attributes("events", events), REPLAY_ATTRIBUTE: "bad-events"}
        messages.append((envelope.encode("events", pending), attributes))

    for group in merged:
        group_size = sum(map(len, group.events))
        if pending and (
            events + len(group.events) > MESSAGE_EVENTS or size + group_size > MESSAGE_BYTES
        ):
            close_message()
            pending, events, size = [], 0, 0
        pending.append(group)
        events, size = events + len(group.events), size + group_size
    if pending:
        close_message()
    return messages


async def replay_bad_events(settings: Settings, filters: Filters, dry_run: bool) -> BadEventsReport:
    """Check the kept bad events that match `filters`; publish and stamp those that pass."""
    from processor.db import connect

    report = BadEventsReport(dry_run=dry_run)
    conn = await connect(settings.database_url)
    publisher = None if dry_run else Publisher(settings)
    try:
        last_id = 0
        while rows := await conn.fetch(
            SELECT_BAD,
            last_id,
            filters.since,
            filters.until,
            filters.reason,
            filters.source,
            PAGE_ROWS,
        ):
            last_id = rows[-1]["id"]
            passed_ids: list[int] = []
            groups: list[envelope.Group] = []
            for row in rows:
                found, error = replayable(row)
                if error is not None:
                    report.failing[error] += 1
                    continue
                report.passed[row["reason"]] += 1
                report.events += sum(len(group.events) for group in found)
                passed_ids.append(row["id"])
                groups += found
            if publisher is not None and groups:
                await publisher.publish(settings.events_topic, messages_of(groups))
                await conn.execute(MARK_REPLAYED, passed_ids)
    finally:
        await conn.close()
        if publisher is not None:
            await publisher.close()
    return report


# --- dead letters -----------------------------------------------------------------------------


def returned_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """A dead letter's attributes without the ones Pub/Sub added when it dead-lettered it."""
    return {
        key: value
        for key, value in attributes.items()
        if not key.startswith(DEAD_LETTER_ATTRIBUTE_PREFIX)
    }


async def replay_dead_letters(
    settings: Settings, max_messages: int | None, progress: IO[str] | None = None
) -> DeadLetterReport:
    """Drain the dead-letter hold subscription back into the topics; keep what cannot be
    decoded (released at the end, so it stays in the subscription for inspection)."""
    from google.api_core.exceptions import DeadlineExceeded

    from clickstream.pubsub_admin import subscriber_async_client

    report = DeadLetterReport()
    subscription = settings.subscription_path(settings.dead_letter_subscription)
    subscriber = subscriber_async_client(settings)
    publisher = Publisher(settings)
    kept_ids: set[str] = set()
    held: list[str] = []  # ack ids of the messages kept
    topics = {"events": settings.events_topic, "bad": settings.bad_events_topic}
    try:
        while max_messages is None or report.replayed + len(kept_ids) < max_messages:
            wanted = PULL_MESSAGES
            if max_messages is not None:
                wanted = min(wanted, max_messages - report.replayed - len(kept_ids))
            try:
                pulled = await subscriber.pull(
                    subscription=subscription, max_messages=wanted, timeout=PULL_WAIT_S
                )
            except DeadlineExceeded:
                break
            received = list(pulled.received_messages)
            fresh = [r for r in received if r.message.message_id not in kept_ids]
            held += [r.ack_id for r in received if r.message.message_id in kept_ids]
            if not fresh:  # nothing left, or only what this run keeps (redelivered)
                break
            done: list[str] = []
            outgoing: dict[str, list[Outgoing]] = {}
            for item in fresh:
                message = item.message
                attributes = returned_attributes(message.attributes)
                try:
                    decoded = envelope.decode(message.data, attributes)
                except envelope.EnvelopeError as exc:
                    report.kept[str(exc)] += 1
                    kept_ids.add(message.message_id)
                    held.append(item.ack_id)
                    continue
                attributes[REPLAY_ATTRIBUTE] = "dead-letters"
                outgoing.setdefault(topics[decoded.kind], []).append((message.data, attributes))
                done.append(item.ack_id)
                report.replayed += 1
                report.events += decoded.event_count
            for topic, messages in outgoing.items():  # acknowledged once all are published
                await publisher.publish(topic, messages)
            if done:
                await subscriber.acknowledge(subscription=subscription, ack_ids=done)
            if progress is not None:
                write_progress(progress, report.progress_line())
    finally:
        if held:  # back in the subscription now rather than when their leases expire
            await subscriber.modify_ack_deadline(
                subscription=subscription, ack_ids=held, ack_deadline_seconds=0
            )
        await publisher.close()
        await subscriber.transport.close()
        if progress is not None:
            write_progress(progress, report.progress_line(), final=True)
    return report


def write_progress(stream: IO[str], line: str, final: bool = False) -> None:
    """One line rewritten in place on a terminal; one line per update elsewhere (logs)."""
    if stream.isatty():
        stream.write(f"\r\x1b[2K{line}" + ("\n" if final else ""))
    elif not final:
        stream.write(f"{line}\n")
    stream.flush()


Report = TypeVar("Report", BadEventsReport, DeadLetterReport)


# --- command line -----------------------------------------------------------------------------


def moment(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), or a duration back from now (`36h`)."""
    from processor.db import parse_duration

    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither an ISO 8601 time (2026-12-01T08:00Z) nor a duration "
                "back from now (36h, 7d)"
            ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="send bad events or dead letters back through the pipeline after a fix",
        description="Send kept events back to the events topic after an incident's fix; the "
        "processor counts each event once. Reads DATABASE_URL, GOOGLE_CLOUD_PROJECT or "
        "PUBSUB_EMULATOR_HOST, or the running local stack (./dev up) for what is not set. "
        "See terraform/README.md, 'After an incident'.",
    )
    commands = parser.add_subparsers(dest="what", required=True, metavar="bad-events|dead-letters")
    bad = commands.add_parser(
        "bad-events",
        help="republish the bad events that today's contract accepts",
        description="Check every kept bad event (PostgreSQL bad_events, not replayed yet) "
        "against today's contract; publish those that pass to the events topic with their "
        "original event_id, received_at, source and client data, and mark them replayed. "
        "Prints how many passed and how many still fail, by reason.",
    )
    bad.add_argument("--since", type=moment, help="received at or after (2026-12-01T08:00Z, 36h)")
    bad.add_argument("--until", type=moment, help="received before (same forms as --since)")
    bad.add_argument(
        "--reason",
        help="only bad events of this class (validation, envelope, processing) or whose reason "
        "contains this text (case-insensitive)",
    )
    bad.add_argument("--source", help="only bad events from this source (write key's name)")
    bad.add_argument(
        "--dry-run", action="store_true", help="check and count; publish and mark nothing"
    )
    bad.add_argument("--json", action="store_true", help="print the report as JSON")
    bad.set_defaults(func=run_bad_events)
    dead = commands.add_parser(
        "dead-letters",
        help="drain the dead-letter subscription back into the events topic",
        description="Pull the dead-letter hold subscription and publish each message back to "
        "the topic it came from, then acknowledge it. Messages that cannot be decoded stay in "
        "the subscription; the summary gives their reasons. Progress on stderr.",
    )
    dead.add_argument("--max", type=int, help="at most this many messages (default: all)")
    dead.add_argument("--json", action="store_true", help="print the summary as JSON")
    dead.set_defaults(func=run_dead_letters)


def run_bad_events(args: argparse.Namespace) -> int:
    filters = Filters(since=args.since, until=args.until, reason=args.reason, source=args.source)
    report = guarded(
        "bad-events",
        lambda: replay_bad_events(
            replay_settings(database=True, pubsub=not args.dry_run), filters, args.dry_run
        ),
    )
    print(json.dumps(report.summary(), indent=2) if args.json else report.text())
    return 0


def run_dead_letters(args: argparse.Namespace) -> int:
    if args.max is not None and args.max < 1:
        raise SystemExit("clickstream replay dead-letters: --max must be at least 1")
    report = guarded(
        "dead-letters",
        lambda: replay_dead_letters(
            replay_settings(database=False, pubsub=True), args.max, sys.stderr
        ),
    )
    print(json.dumps(report.summary(), indent=2) if args.json else report.text())
    return 0


def guarded(command: str, work: Callable[[], Coroutine[Any, Any, Report]]) -> Report:
    """Run `work()`'s coroutine; what an operator can fix is one line naming it, no traceback."""
    import asyncpg
    from google.api_core.exceptions import GoogleAPICallError
    from google.auth.exceptions import GoogleAuthError

    try:
        return asyncio.run(work())
    except (SettingError, DatabaseConfigError, GoogleAuthError) as error:
        problem = str(error)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as error:
        problem = f"{error}: the database schema is not this version's; run clickstream db migrate"
    except (OSError, asyncpg.PostgresError) as error:
        problem = f"PostgreSQL: {error}"
    except GoogleAPICallError as error:
        problem = f"Pub/Sub: {error.message}"
    raise SystemExit(f"clickstream replay {command}: {problem}")
