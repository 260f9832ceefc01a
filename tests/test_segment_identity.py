"""Identity merge in the PostgreSQL sink: `identify` folds an anonymous profile into the user's.

Real PostgreSQL, the processing core as the worker runs it; every aggregate is checked against a
recount of the events sent after the merge (processor_testing.aggregate_mismatches).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import asyncpg
import pytest
from processor_testing import BASE_TIME, IPHONE, aggregate_mismatches, envelope_of, event

from clickstream_contract import envelope
from processor import identities, postgres
from processor.core import Message, Processor
from processor.postgres import start_sink

# Every event this module's tests sent, for the recount (each test has a database of its own;
# the recount keeps the events stored there).
SENT: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def forget_sent() -> None:
    SENT.clear()


def message(events: list[dict[str, Any]], message_id: str | None = None) -> Message:
    SENT.extend(events)
    return Message(
        message_id=message_id or uuid.uuid4().hex,
        data=envelope_of(events),
        attributes=envelope.attributes("events", len(events)),
    )


def identify(anonymous_id: str, user_id: str, minutes: float) -> dict[str, Any]:
    return event(
        "identify",
        at=BASE_TIME + timedelta(minutes=minutes),
        anonymous_id=anonymous_id,
        user_id=user_id,
        properties={"email": f"{user_id}@example.com"},
    )


def anonymous_history(anonymous_id: str = "anon-1") -> list[dict[str, Any]]:
    """Browsing, a cart and an order, all before the visitor signs in."""
    return [
        event("page_view", at=BASE_TIME, anonymous_id=anonymous_id),
        event("product_view", at=BASE_TIME + timedelta(minutes=1), anonymous_id=anonymous_id),
        event("add_to_cart", at=BASE_TIME + timedelta(minutes=2), anonymous_id=anonymous_id),
        event("purchase", at=BASE_TIME + timedelta(minutes=3), anonymous_id=anonymous_id),
    ]


async def mismatches(pool: asyncpg.Pool) -> dict[str, Any]:
    """The aggregates against a recount of every event this module's tests sent (`message`)."""
    async with pool.acquire() as conn:
        return await aggregate_mismatches(cast(asyncpg.Connection, conn), SENT)


async def customers(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM customers")
    return {row["visitor_key"]: dict(row) for row in rows}


async def test_identify_merges_the_anonymous_profile_into_the_user(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    await processor.process([message(anonymous_history())])
    before = (await customers(pool))["anon-1"]
    assert (before["events"], before["orders"], before["user_id"]) == (4, 1, None)

    await processor.process([message([identify("anon-1", "user-1", minutes=10)])])
    later = event(
        "purchase",
        at=BASE_TIME + timedelta(hours=2),
        anonymous_id=None,
        user_id="user-1",
        context={"user_agent": IPHONE},
    )
    await processor.process([message([later])])

    profiles = await customers(pool)
    assert list(profiles) == ["user-1"]
    user = profiles["user-1"]
    assert user["user_id"] == "user-1"
    assert user["anonymous_ids"] == ["anon-1"]
    assert user["events"] == 6  # four anonymous, the identify, the later purchase
    assert user["orders"] == 2
    assert float(user["lifetime_value"]) == 38.0
    assert user["first_seen_at"] == BASE_TIME
    assert user["first_source"] == before["first_source"]
    # The anonymous history now belongs to the user: sessions and the timeline.
    assert (
        await pool.fetchval("SELECT count(*) FROM visitor_activity WHERE visitor_key <> 'user-1'")
        == 0
    )
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE visitor_key <> 'user-1'") == 0
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE user_id = 'user-1'") == (
        await pool.fetchval("SELECT count(*) FROM sessions")
    )
    assert await pool.fetchval("SELECT user_id FROM identities WHERE anonymous_id = 'anon-1'") == (
        "user-1"
    )
    assert await mismatches(pool) == {}


async def test_a_redelivered_or_repeated_identify_merges_nothing_twice(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    await processor.process([message(anonymous_history())])
    link = message([identify("anon-1", "user-1", minutes=10)])
    await processor.process([link])
    merged = await customers(pool)

    await processor.process([link])  # Pub/Sub redelivery
    await processor.process([message([identify("anon-1", "user-1", minutes=20)])])  # again

    after = await customers(pool)
    assert list(after) == ["user-1"]
    # Only the second identify (a new event) counts, as one event: nothing merged again.
    assert after["user-1"]["events"] == merged["user-1"]["events"] + 1
    assert after["user-1"]["orders"] == merged["user-1"]["orders"]
    assert after["user-1"]["lifetime_value"] == merged["user-1"]["lifetime_value"]
    assert await mismatches(pool) == {}


async def test_late_anonymous_events_count_for_the_linked_user(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    await processor.process([message([identify("anon-1", "user-1", minutes=10)])])
    # Sent before the sign-in, delivered after it (another message, out of order).
    await processor.process([message(anonymous_history())])

    profiles = await customers(pool)
    assert list(profiles) == ["user-1"]
    assert profiles["user-1"]["events"] == 5
    assert profiles["user-1"]["orders"] == 1
    rows = await pool.fetch(
        "SELECT DISTINCT visitor_key, e.anonymous_id FROM visitor_activity,"
        " json_to_recordset(events) AS e(anonymous_id text)"
    )
    # The anonymous events keep what the client sent; only their visitor is the user.
    assert {tuple(row) for row in rows} == {("user-1", "anon-1")}
    assert await mismatches(pool) == {}


async def test_identify_in_the_same_batch_and_two_devices_of_one_user(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    # Two devices active in the same minutes, linked to one user in one batch: each minute,
    # hour and day must count that user once.
    phone, laptop = anonymous_history("phone"), anonymous_history("laptop")
    batch = [
        *phone,
        *laptop,
        identify("phone", "user-1", minutes=4),
        identify("laptop", "user-1", minutes=4),
    ]
    await processor.process([message(batch[:5]), message(batch[5:])])

    profiles = await customers(pool)
    assert list(profiles) == ["user-1"]
    assert profiles["user-1"]["anonymous_ids"] == ["laptop", "phone"]
    assert profiles["user-1"]["events"] == 10
    assert profiles["user-1"]["orders"] == 2
    visitors = await pool.fetch(
        "SELECT visitor_key FROM visitor_minutes WHERE minute = $1", BASE_TIME
    )
    assert [row[0] for row in visitors] == ["user-1"]
    assert await mismatches(pool) == {}


@pytest.mark.parametrize("first", ["order-a", "order-b"])
async def test_the_last_order_at_the_same_time_is_the_smallest_id(
    processor: Processor, pool: asyncpg.Pool, first: str
) -> None:
    # Two orders placed in the same instant: whichever arrives first, in one batch, in two
    # deliveries or by a merge of two devices, the profile names the same one.
    second = "order-b" if first == "order-a" else "order-a"

    def purchase(order_id: str, anonymous_id: str) -> dict[str, Any]:
        order = {"order_id": order_id, "revenue": 5.0, "currency": "EUR"}
        return event("purchase", at=BASE_TIME, anonymous_id=anonymous_id, order=order)

    await processor.process([message([purchase(first, "one"), purchase(second, "one")])])
    await processor.process([message([purchase(f"{first}-2", "two")])])
    await processor.process([message([purchase(f"{second}-2", "two")])])
    # Merged one after the other into a user, then two at once into another.
    devices = {"phone": f"{first}-3", "laptop": f"{second}-3", "tablet": f"{first}-4"}
    devices["watch"] = f"{second}-4"
    await processor.process([message([purchase(id, device) for device, id in devices.items()])])
    await processor.process([message([identify("phone", "user-1", minutes=1)])])
    await processor.process([message([identify("laptop", "user-1", minutes=1)])])
    await processor.process(
        [message([identify("tablet", "user-2", minutes=1), identify("watch", "user-2", minutes=1)])]
    )

    profiles = await customers(pool)
    assert {key: row["last_order_id"] for key, row in profiles.items()} == {
        "one": "order-a",
        "two": "order-a-2",
        "user-1": "order-a-3",
        "user-2": "order-a-4",
    }
    assert await mismatches(pool) == {}


async def test_first_link_wins_and_user_profiles_are_never_merged(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    await processor.process([message(anonymous_history())])
    await processor.process([message([identify("anon-1", "user-1", minutes=10)])])
    # The same device later identifies as someone else: the first link stands.
    await processor.process([message([identify("anon-1", "user-2", minutes=20)])])
    # An identify whose "anonymous" id is another user's id merges no user profile.
    await processor.process([message([identify("user-1", "user-3", minutes=30)])])

    profiles = await customers(pool)
    assert sorted(profiles) == ["user-1", "user-2", "user-3"]
    assert profiles["user-1"]["orders"] == 1
    assert profiles["user-2"]["events"] == 1
    links = await pool.fetch("SELECT anonymous_id, user_id FROM identities ORDER BY 1")
    assert [tuple(row) for row in links] == [("anon-1", "user-1"), ("user-1", "user-3")]
    assert await mismatches(pool) == {}


async def test_an_identify_racing_events_of_the_same_visitors_never_deadlocks_or_splits(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    # Round after round, two batches in flight at once: one links a device to its user, the
    # other carries events of that device (anonymous), of the user on another device, and of
    # visitors both batches share (so both touch the same minutes, hours and rows). Whichever
    # commits first, no deadlock, every aggregate equals its recount, and the device's
    # profile is not left split from the user's.
    def at(r: int, seconds: float) -> Any:
        return BASE_TIME + timedelta(hours=r // 10, minutes=r % 10, seconds=seconds)

    for r in range(24):
        device, user, laptop = f"device-{r}", f"user-{r}", f"laptop-{r}"
        session = {"session_id": f"s-{device}"} if r % 2 else {}  # client session ids, or none
        history = [event("page_view", at=at(r, s), anonymous_id=device, **session) for s in (0, 1)]
        await processor.process([message(history)])
        # Enough visitors in both batches that their transactions overlap (client session ids:
        # no session state to lock, so nothing else makes the batches wait for each other).
        shared = [f"shared-{n}" for n in range(300)]
        linking = [
            identify(device, user, minutes=0) | {"occurred_at": at(r, 5).isoformat(), **session},
            *(event("page_view", at=at(r, 6), anonymous_id=v, session_id=f"s-{v}") for v in shared),
        ]
        racing = [
            event("product_view", at=at(r, 7), anonymous_id=device, **session),
            event("page_view", at=at(r, 8), anonymous_id=device, **session),
            event("page_view", at=at(r, 9), anonymous_id=laptop, user_id=user),
            event("add_to_cart", at=at(r, 9), anonymous_id=laptop, user_id=user),
            *(
                event("page_view", at=at(r, 10), anonymous_id=v, session_id=f"s-{v}")
                for v in reversed(shared)
            ),
        ]
        first, second = (linking, racing) if r % 4 < 2 else (racing, linking)
        await asyncio.gather(
            processor.process([message(first)]), processor.process([message(second)])
        )
        profiles = await customers(pool)
        assert device not in profiles, f"round {r}: the device's profile split off again"
        assert profiles[user]["events"] == 7  # 2 + identify + 2 on the device, 2 on the laptop
    assert await mismatches(pool) == {}


@contextlib.asynccontextmanager
async def linking_beside_a_round_in_flight(
    processor: Processor, pool: asyncpg.Pool
) -> AsyncIterator[tuple[asyncio.Task[None], asyncio.Task[None]]]:
    """anon-1's history; then a batch of anon-1's events, committed, whose round of applying
    deltas is held in flight (a transaction locks the minute row it applies last); then a batch
    linking anon-1 to user-1, which commits beside it. Yields (in flight, linking) once the
    link is committed. The round in flight goes on when the block ends."""
    await processor.process([message(anonymous_history())])
    minute = BASE_TIME + timedelta(hours=3)  # an hour of its own: no hourly row shared
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute(
            "INSERT INTO metrics_minute (minute, event_type) VALUES ($1, 'page_view')", minute
        )
        in_flight = asyncio.create_task(
            processor.process(
                [message([event("page_view", at=minute, anonymous_id="anon-1", session_id="s")])]
            )
        )
        await asyncio.sleep(0.5)
        assert not in_flight.done()
        linking = asyncio.create_task(
            processor.process([message([identify("anon-1", "user-1", minutes=10)])])
        )
        for _ in range(300):
            if await pool.fetchval("SELECT count(*) FROM identities"):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the linking batch waited for the round in flight")
        yield in_flight, linking


async def test_a_linking_batch_commits_beside_a_round_in_flight_which_merges_it(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    # The linking batch does not wait for the applier: it leaves its deltas to the round in
    # flight, which applies them next and merges, leaving nothing split.
    async with linking_beside_a_round_in_flight(processor, pool) as (in_flight, linking):
        await asyncio.wait_for(linking, 10)
        assert await pool.fetchval("SELECT merged_at FROM identities") is None
        assert "anon-1" in await customers(pool)
        assert not in_flight.done()
    await asyncio.wait_for(in_flight, 30)
    assert list(await customers(pool)) == ["user-1"]
    assert (await customers(pool))["user-1"]["events"] == 6
    assert await pool.fetchval("SELECT merged_at IS NOT NULL FROM identities")
    assert await pool.fetchval("SELECT count(*) FROM delta_minutes") == 0
    assert await mismatches(pool) == {}


async def test_a_batch_that_missed_a_link_and_was_applied_after_its_merge_is_merged_too(
    processor: Processor, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # anon-2's link was merged; then a batch that had read the links before the link existed
    # (attribution left out here, as that race would) is applied under anon-2: the round that
    # applies it marks the link pending again and merges those rows too.
    await processor.process([message(anonymous_history("anon-2"))])
    await processor.process([message([identify("anon-2", "user-2", minutes=10)])])
    assert await pool.fetchval("SELECT merged_at IS NOT NULL FROM identities")

    async def before_the_link(conn: object, events: object) -> None:
        return None

    late = event("page_view", at=BASE_TIME + timedelta(minutes=11), anonymous_id="anon-2")
    with monkeypatch.context() as patched:
        patched.setattr(identities, "attribute", before_the_link)
        await processor.process([message([late])])
    profiles = await customers(pool)
    assert "anon-2" not in profiles and profiles["user-2"]["events"] == 6
    assert await mismatches(pool) == {}


async def test_deltas_and_a_link_left_by_a_crashed_round_are_applied_by_the_next_batch(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    async with linking_beside_a_round_in_flight(processor, pool) as (in_flight, linking):
        await asyncio.wait_for(linking, 10)
        in_flight.cancel()  # the worker dies while its round waits: the round rolls back
        with contextlib.suppress(asyncio.CancelledError):
            await in_flight
        assert await pool.fetchval("SELECT merged_at FROM identities") is None
        assert set(await customers(pool)) == {"anon-1"}  # as the history left it
        assert await pool.fetchval("SELECT count(*) FROM delta_customers") == 2
    # Both batches committed; the next batch's round applies what they left, and merges.
    await processor.process([message([event("page_view", anonymous_id="anon-3")])])
    profiles = await customers(pool)
    assert set(profiles) == {"user-1", "anon-3"} and profiles["user-1"]["events"] == 6
    assert await mismatches(pool) == {}


async def test_a_starting_processor_merges_the_links_a_dead_one_left(
    processor: Processor,
    pool: asyncpg.Pool,
    fresh_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both shells (the worker and a function instance) start through `start_sink`: links
    that a processor committed and then died before merging are merged before the first
    message, not whenever another batch happens to record a link."""
    await processor.process([message(anonymous_history("anon-1"))])
    await processor.process([message([event("page_view", anonymous_id="phone", user_id="user-1")])])

    async def dies_before_merging(conn: object) -> int:
        return 0

    with monkeypatch.context() as patched:
        patched.setattr(identities, "merge_pending", dies_before_merging)
        await processor.process([message([identify("anon-1", "user-1", minutes=5)])])
    assert await pool.fetchval("SELECT count(*) FROM identities WHERE merged_at IS NULL") == 1
    assert set(await customers(pool)) == {"anon-1", "user-1"}

    sink = await start_sink(fresh_database_url, max_size=1)
    await sink.pool.close()
    profiles = await customers(pool)
    assert set(profiles) == {"user-1"} and profiles["user-1"]["orders"] == 1
    assert await mismatches(pool) == {}


async def test_a_start_that_loses_the_database_while_catching_up_still_starts(
    processor: Processor,
    pool: asyncpg.Pool,
    fresh_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database goes away during `start_sink`'s catch-up round: the start goes on, and the
    next batch through the started sink applies what was left."""

    async def dies_before_applying(conn: object) -> None:
        return None

    with monkeypatch.context() as patched:
        patched.setattr(postgres, "apply_pending", dies_before_applying)
        await processor.process([message(anonymous_history())])
    assert await pool.fetchval("SELECT count(*) FROM customers") == 0  # left as deltas

    async with pool.acquire() as blocker, blocker.transaction():
        # The catch-up round waits on this minute row; its connection is then terminated.
        await blocker.execute(
            "INSERT INTO metrics_minute (minute, event_type) VALUES ($1, 'page_view')",
            BASE_TIME.replace(second=0, microsecond=0),
        )
        starting = asyncio.create_task(start_sink(fresh_database_url, max_size=1))
        for _ in range(200):
            waiting = await pool.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting, "the catch-up round did not reach the blocked row"
        await pool.execute("SELECT pg_terminate_backend($1)", waiting)
        sink = await asyncio.wait_for(starting, 30)
    try:
        await Processor(sink).process([message([event("page_view", anonymous_id="anon-2")])])
    finally:
        await sink.pool.close()
    assert set(await customers(pool)) == {"anon-1", "anon-2"}
    assert await mismatches(pool) == {}
