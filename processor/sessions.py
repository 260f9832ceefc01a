"""Sessionization for events whose client sent no `session_id`.

A session is a run of one visitor's events with no gap longer than 30 minutes, keyed by
`anonymous_id` (or `visitor_key` when the event has no anonymous id). The open session of each
key lives in `session_state`, read and written inside the same transaction as the events, so
state always matches what was committed and survives restarts. Session ids are derived from the
key and the session's first event time: processing the same events again yields the same ids.

Concurrent writers (several workers, function instances) lock the state rows of the keys they
touch, in sorted order, so two batches of one visitor are sessionized one after the other.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from processor.db import Connection
from processor.records import EnrichedEvent

SESSION_TIMEOUT: Final = timedelta(minutes=30)
_NAMESPACE: Final = uuid.UUID("6b1f8f1e-4d0c-5a43-9a55-3f0c0e7a2f10")


class OpenSession(NamedTuple):
    session_id: str
    last_seen_at: datetime


def session_key(event: EnrichedEvent) -> str:
    return event.anonymous_id or event.visitor_key


def session_id_for(key: str, started_at: datetime) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{key}\x00{started_at.astimezone(UTC).isoformat()}"))


def assign(events: list[EnrichedEvent], state: dict[str, OpenSession]) -> dict[str, OpenSession]:
    """Set `session_id` on every event that has none; return the open session per key after.

    Events much older than the open session (more than the timeout before its last activity,
    e.g. a phone that was offline) do not reopen or extend it: they form sessions among
    themselves, and the open session stays the newest one.
    """
    by_key: defaultdict[str, list[EnrichedEvent]] = defaultdict(list)
    for event in events:
        if not event.session_id:
            by_key[session_key(event)].append(event)
    after: dict[str, OpenSession] = {}
    for key, group in by_key.items():
        group.sort(key=lambda event: (event.occurred_at, event.event_id))
        current = state.get(key)
        late: OpenSession | None = None
        for event in group:
            at = event.occurred_at
            if current is not None and at < current.last_seen_at - SESSION_TIMEOUT:
                late = _advance(late, key, at)
                event.session_id = late.session_id
            else:
                current = _advance(current, key, at)
                event.session_id = current.session_id
        assert current is not None
        after[key] = current
    return after


def _advance(session: OpenSession | None, key: str, at: datetime) -> OpenSession:
    if session is None or at - session.last_seen_at > SESSION_TIMEOUT:
        return OpenSession(session_id_for(key, at), at)
    return OpenSession(session.session_id, max(session.last_seen_at, at))


def keys_needing_sessions(events: list[EnrichedEvent]) -> list[str]:
    return sorted({session_key(event) for event in events if not event.session_id})


async def lock_state(conn: Connection, keys: list[str]) -> dict[str, OpenSession]:
    """Lock (creating placeholders as needed) and read the state rows of `keys` (sorted)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        "INSERT INTO session_state (anonymous_id, session_id, last_seen_at)"
        " SELECT key, '', '-infinity' FROM unnest($1::text[]) AS key"
        " ON CONFLICT (anonymous_id) DO UPDATE SET session_id = session_state.session_id"
        " RETURNING anonymous_id, session_id, last_seen_at",
        keys,
    )
    return {
        row["anonymous_id"]: OpenSession(row["session_id"], row["last_seen_at"])
        for row in rows
        if row["session_id"]  # "" is a placeholder just created: no open session yet
    }


async def save_state(conn: Connection, state: dict[str, OpenSession]) -> None:
    if not state:
        return
    keys = sorted(state)
    await conn.execute(
        "UPDATE session_state AS s SET session_id = u.session_id, last_seen_at = u.last_seen_at"
        " FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
        "   AS u(key, session_id, last_seen_at)"
        " WHERE s.anonymous_id = u.key",
        keys,
        [state[key].session_id for key in keys],
        [state[key].last_seen_at for key in keys],
    )
