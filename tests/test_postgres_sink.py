"""The PostgreSQL sink and the processing core against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import asyncpg
import pytest
from processor_testing import (
    BASE_TIME,
    IPHONE,
    WINDOWS_CHROME,
    a_day_of_traffic,
    aggregate_mismatches,
    envelope_of,
    event,
    table_counts,
)

from clickstream_contract import envelope
from clickstream_contract.config import DatabaseConfigError, connect_options, describe_database
from processor import db, postgres
from processor.core import Message, Processor, decode
from processor.migrations import apply_migrations, migrate, migration_files
from processor.postgres import PostgresSink, create_sink_pool


def message(events: list[dict], kind: envelope.Kind = "events", message_id: str | None = None):
    return Message(
        message_id=message_id or uuid.uuid4().hex,
        data=envelope_of(events, kind),
        attributes=envelope.attributes(kind, len(events)),
    )


async def test_migrations_are_idempotent_and_safe_to_race(fresh_database_url: str) -> None:
    conns = [await db.connect(fresh_database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(conn) for conn in conns))
        expected = [path.stem for path in migration_files()]
        assert sorted(results, key=len) == [[], [], expected]
        assert await apply_migrations(conns[0]) == []
        versions = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY 1")
        assert [row["version"] for row in versions] == expected
    finally:
        for conn in conns:
            await conn.close()


async def test_unique_visitor_minutes_lose_their_event_type_and_keep_pending_deltas(
    fresh_database_url: str,
) -> None:
    """Migration 305 on a database written before it: one row per visitor and minute, and the
    deltas a processor committed but did not apply are applied after it."""
    minute = BASE_TIME.replace(second=0, microsecond=0)
    conn = await db.connect(fresh_database_url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
        for path in migration_files():
            if path.stem >= "305":
                break
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations VALUES ($1)", path.stem)
        later = minute + timedelta(minutes=1)
        await conn.execute(
            "INSERT INTO visitor_minutes VALUES ($1, 'page_view', 'v1'), ($1, 'purchase', 'v1'),"
            " ($1, 'page_view', 'v2')",
            minute,
        )
        await conn.execute(
            "INSERT INTO delta_visitor_minutes VALUES ($1, 'page_view', 'v1'),"
            " ($1, 'search', 'v1'), ($1, 'page_view', 'v3')",
            later,
        )
        await conn.execute(
            "INSERT INTO delta_minutes (minute, event_type, events, revenue)"
            " VALUES ($1, 'page_view', 2, 0), ($1, 'search', 1, 0)",
            later,
        )
        assert (await migrate(fresh_database_url))[0] == "305_visitor_minutes_per_minute"
        await postgres.apply_pending(conn)
        rows = await conn.fetch("SELECT minute, visitor_key FROM visitor_minutes ORDER BY 1, 2")
        assert [tuple(row) for row in rows] == [
            (minute, "v1"), (minute, "v2"), (later, "v1"), (later, "v3")
        ]  # fmt: skip
        assert await conn.fetchval("SELECT sum(events) FROM metrics_minute") == 3
    finally:
        await conn.close()


async def test_database_password_comes_from_its_own_variable(database_url: str) -> None:
    options = connect_options(
        "postgresql://clickstream@db.internal/clickstream",
        {"CLICKSTREAM_DB_PASSWORD": "s3cret"},
    )
    assert options == {
        "dsn": "postgresql://clickstream@db.internal/clickstream",
        "password": "s3cret",
    }
    assert "s3cret" not in describe_database("postgresql://u:s3cret@h:5/d")
    # pgserver's URLs name a socket folder, which is what the log should say.
    assert (
        describe_database("postgresql://postgres:@/postgres?host=/run/pg")
        == "/run/pg:5432/postgres"
    )
    with pytest.raises(DatabaseConfigError, match="DATABASE_URL"):
        connect_options(None, {})


async def test_events_land_enriched(processor: Processor, pool: asyncpg.Pool) -> None:
    view = event(
        "page_view",
        user_id="user-9",
        page={
            "url": "https://shop.example/shoes/red?utm_source=newsletter&utm_medium=cpc",
            "referrer": "https://www.google.com/search?q=shoes",
            "title": "Red shoes",
        },
        context={"user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
                 "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                 "locale": "de-DE"},
        properties={"ab": "b", "n": 3},
    )  # fmt: skip
    await processor.process([message([view])])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT event_id::text FROM event_ids") == view["event_id"]
        session = await conn.fetchrow("SELECT * FROM sessions")
        activity = await conn.fetchrow("SELECT * FROM visitor_activity")
    assert session["visitor_key"] == activity["visitor_key"] == "user-9"
    assert (session["utm_source"], session["utm_medium"]) == ("newsletter", "cpc")
    assert session["referrer_class"] == "paid"
    assert (session["device_type"], session["browser"], session["os"]) == (
        "mobile",
        "Mobile Safari",
        "iOS",
    )
    [shown] = json.loads(activity["events"])
    assert shown["event_id"] == view["event_id"]
    assert (shown["page_path"], shown["page_title"]) == ("/shoes/red", "Red shoes")
    assert shown["session_id"] == session["session_id"]
    assert activity["minutes"] == [BASE_TIME]


async def test_redelivery_and_duplicates_change_no_aggregate(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    events = a_day_of_traffic()
    messages = [message(events[i : i + 7]) for i in range(0, len(events), 7)]
    await processor.process(messages[: len(messages) // 2])
    async with pool.acquire() as conn:
        assert await aggregate_mismatches(conn, events[: len(messages) // 2 * 7]) == {}
    await processor.process(messages)  # the first half again, with the rest
    async with pool.acquire() as conn:
        first = await table_counts(conn)
        snapshot = {
            table: await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")
            for table in ("metrics_minute", "sessions", "customers", "product_metrics_hour")
        }
    # Redeliver everything: as the same messages, and the same events in new messages.
    await processor.process(messages)
    await processor.process([message(events[::-1])])
    async with pool.acquire() as conn:
        assert await table_counts(conn) == first
        for table, rows in snapshot.items():
            assert await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2") == rows, table
        assert await aggregate_mismatches(conn, events) == {}
        assert first["event_ids"] == len(events)
        assert await conn.fetchval("SELECT sum(events) FROM metrics_minute") == len(events)


async def test_an_event_passed_twice_in_one_write_counts_once(pool: asyncpg.Pool) -> None:
    # The processor's batches hold each event once; the sink keeps the promise on its own too.
    events = a_day_of_traffic(visitors=20, seed=11)
    twice = decode([message(events)]).events + decode([message(events[:30])]).events
    assert await PostgresSink(pool).write(twice, []) == len(events)
    async with pool.acquire() as conn:
        assert await aggregate_mismatches(conn, events) == {}


async def test_a_round_folds_the_deltas_of_several_batches_per_key(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    """Two batches of one customer and session, committed while another session applies, are
    folded in one round: counters add up, firsts come from the earliest delta, the device and
    the last order from the newest, anonymous ids are united."""
    url = "https://shop.example/p/{}?utm_source={}"
    later = [
        event("page_view", at=BASE_TIME + timedelta(minutes=10), anonymous_id="phone",
              user_id="user-1", session_id="s1", page={"url": url.format(2, "late")},
              context={"user_agent": IPHONE}),
        event("purchase", at=BASE_TIME + timedelta(minutes=12), anonymous_id="phone",
              user_id="user-1", session_id="s1", context={"user_agent": IPHONE},
              order={"order_id": "o-late", "revenue": 5.0, "currency": "EUR"}),
    ]  # fmt: skip
    earlier = [
        event("page_view", at=BASE_TIME, anonymous_id="laptop", user_id="user-1", session_id="s1",
              page={"url": url.format(1, "early")}, context={"user_agent": WINDOWS_CHROME}),
        event("purchase", at=BASE_TIME + timedelta(minutes=2), anonymous_id="laptop",
              user_id="user-1", session_id="s1", context={"user_agent": WINDOWS_CHROME},
              order={"order_id": "o-early", "revenue": 7.0, "currency": "EUR"}),
    ]  # fmt: skip
    async with pool.acquire() as holder, holder.transaction():  # both are left as deltas
        await holder.execute("SELECT pg_advisory_xact_lock($1)", postgres.APPLIER_LOCK_KEY)
        await processor.process([message(later)])
        await processor.process([message(earlier)])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM delta_customers") == 2
        await postgres.apply_pending(conn)
        customer = await conn.fetchrow("SELECT * FROM customers WHERE visitor_key = 'user-1'")
        session = await conn.fetchrow("SELECT * FROM sessions WHERE session_id = 's1'")
        assert await aggregate_mismatches(conn, [*later, *earlier]) == {}
    assert customer["anonymous_ids"] == ["laptop", "phone"]
    assert customer["first_source"] == "early"
    assert customer["device_type"] == "mobile"
    assert (customer["last_order_id"], customer["orders"], customer["sessions"]) == ("o-late", 2, 1)
    assert session["landing_url"] == url.format(1, "early")
    assert (session["user_id"], session["device_type"], session["events"]) == (
        "user-1",
        "desktop",
        4,
    )


async def test_apply_statements_join_nothing_whatever_the_delta_tables_statistics(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    """A vacuum or an analyze that finds a delta table empty leaves the planner estimating one
    row for it, however many deltas wait. A join planned on that estimate is a nested loop,
    quadratic in the deltas of a round; so the apply statements join nothing."""
    await processor.process([message(a_day_of_traffic(visitors=5))])  # pages, all deltas applied
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE " + ", ".join(postgres.DELTA_TABLES))
        statements = [
            (sql, ())
            for script in (postgres.APPLY_VISITORS_SQL, postgres.APPLY_COUNTERS_SQL)
            for sql in script.split(";\n")
            if sql.strip()
        ] + [(postgres.APPLY_SESSIONS_SQL, ()), (postgres.APPLY_CUSTOMERS_SQL, ("{}",))]
        for sql, args in statements:
            [explained] = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
            nodes = list(plan_nodes(explained["Plan"]))
            scans = [n for n in nodes if n.get("Relation Name", "").startswith("delta_")
                     and n["Node Type"] == "Seq Scan"]  # fmt: skip
            assert scans and all(n["Plan Rows"] == 1 for n in scans), sql  # the estimate
            assert not [n for n in nodes if "Join" in n["Node Type"] or "Loop" in n["Node Type"]]


def plan_nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


async def test_concurrent_batches_of_the_same_visitors_stay_exact(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    events = a_day_of_traffic(visitors=8, seed=3)
    chunks = [[message(events[i::4])] for i in range(4)]
    await asyncio.gather(*(processor.process(chunk) for chunk in chunks + chunks))
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM event_ids") == len(events)
        assert await aggregate_mismatches(conn, events) == {}


async def test_two_sinks_with_overlapping_batches_count_each_event_once(
    pool: asyncpg.Pool, fresh_database_url: str
) -> None:
    """Two processes (each its own pool and known-rows cache), the same events in overlapping
    batches of different shapes, with sign-ins, at the same time, twice over."""
    other = await create_sink_pool(fresh_database_url)
    try:
        first, second = Processor(PostgresSink(pool)), Processor(PostgresSink(other))
        events = a_day_of_traffic(visitors=12, seed=5)
        signed = [e for e in events if "user_id" in e][:3]
        events += [
            event("identify", at=BASE_TIME + timedelta(minutes=30), anonymous_id=e["anonymous_id"],
                  user_id=f"late-{e['anonymous_id']}")
            for e in events if "user_id" not in e
        ][:4] + signed  # fmt: skip
        halves = [message(events[: len(events) * 2 // 3]), message(events[len(events) // 3 :])]
        by_five = [message(events[i : i + 5]) for i in range(0, len(events), 5)]
        for _ in range(2):
            await asyncio.gather(first.process(halves), second.process(by_five[::-1]))
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM event_ids") == len(
                {e["event_id"] for e in events}
            )
            assert await aggregate_mismatches(conn, events) == {}
    finally:
        await other.close()


async def lock_waiters(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )


async def until_lock_waiters(conn: asyncpg.Connection, count: int) -> None:
    for _ in range(400):
        if await lock_waiters(conn) >= count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"fewer than {count} sessions came to wait on a lock")


@pytest.mark.parametrize("batch_in_flight", [True, False])
async def test_an_applier_past_its_budget_leaves_the_rest_to_a_batch_in_flight(
    processor: Processor, pool: asyncpg.Pool, fresh_database_url: str, batch_in_flight: bool
) -> None:
    """Under sustained load every apply round finds batches committed while it ran. Past its
    budget, the applier returns when a batch is in flight, which applies them after its
    commit; with none in flight it goes on and applies them itself."""
    events = a_day_of_traffic(visitors=10, seed=17)
    first, second = events[::2], events[1::2]
    late = event("page_view", at=BASE_TIME + timedelta(days=1), anonymous_id="anon-0")
    first_minute = min(first, key=lambda e: e["occurred_at"])
    blocked_minute = (
        datetime.fromisoformat(first_minute["occurred_at"]).replace(second=0, microsecond=0),
        first_minute["event_type"],
    )
    async with pool.acquire() as holder, holder.transaction():  # `first` is left as deltas
        await holder.execute("SELECT pg_advisory_xact_lock($1)", postgres.APPLIER_LOCK_KEY)
        await processor.process([message(first)])
    watcher, minute, state = [await db.connect(fresh_database_url) for _ in range(3)]
    try:
        # The applier's round waits on a minute row of `first` ...
        rows_held = minute.transaction()
        await rows_held.start()
        await minute.execute(
            "INSERT INTO metrics_minute (minute, event_type) VALUES ($1, $2)", *blocked_minute
        )
        async with pool.acquire() as conn:
            applier = asyncio.create_task(postgres.apply_pending(conn, budget=0))
            await until_lock_waiters(watcher, 1)
            # ... while `second` commits: its deltas wait for a round after this one.
            await processor.process([message(second)])
            if batch_in_flight:  # a batch waits on its visitor's session state, mid-transaction
                state_held = state.transaction()
                await state_held.start()
                await state.execute(
                    "SELECT FROM session_state WHERE anonymous_id = 'anon-0' FOR UPDATE"
                )
                in_flight = asyncio.create_task(processor.process([message([late])]))
                await until_lock_waiters(watcher, 2)
            await rows_held.rollback()
            await asyncio.wait_for(applier, 30)
        if batch_in_flight:
            assert await watcher.fetchval(postgres.PENDING_DELTAS_SQL)
            assert await aggregate_mismatches(watcher, first) == {}
            await state_held.rollback()
            await asyncio.wait_for(in_flight, 30)
            applied = [*first, *second, late]
        else:
            applied = [*first, *second]
    finally:
        for conn in (watcher, minute, state):
            await conn.close()
    async with pool.acquire() as conn:
        assert not await conn.fetchval(postgres.PENDING_DELTAS_SQL)
        assert await aggregate_mismatches(conn, applied) == {}


async def test_a_late_event_moves_funnel_step_and_rollups_follow(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    later = event("add_to_cart", at=BASE_TIME + timedelta(hours=2), session_id="s1")
    earlier = event("add_to_cart", at=BASE_TIME + timedelta(minutes=5), session_id="s1")
    other = event("add_to_cart", at=BASE_TIME + timedelta(hours=2), session_id="s2")
    await processor.process([message([later])])
    # The redelivered event is left out of the batch's rows; the late one moves the step.
    await processor.process([message([later, earlier, other])])
    async with pool.acquire() as conn:
        funnel = await conn.fetch(
            "SELECT hour, sessions FROM funnel_hour WHERE step = 'add_to_cart' ORDER BY hour"
        )
        assert [(r["hour"], r["sessions"]) for r in funnel] == [
            (BASE_TIME, 1),
            (BASE_TIME + timedelta(hours=2), 1),
        ]
        assert await aggregate_mismatches(conn, [later, earlier, other]) == {}


async def test_customer_profile(processor: Processor, pool: asyncpg.Pool) -> None:
    first = event("page_view", at=BASE_TIME, user_id="u1", anonymous_id="a")
    order1 = event("purchase", at=BASE_TIME + timedelta(minutes=5), user_id="u1", anonymous_id="a")
    order1["order"].update(order_id="o-1", revenue=30.0)
    order2 = event("purchase", at=BASE_TIME + timedelta(hours=3), user_id="u1", anonymous_id="b")
    order2["order"].update(order_id="o-2", revenue=12.25)
    await processor.process([message([order2])])
    await processor.process([message([first, order1])])
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM customers WHERE visitor_key = 'u1'")
    assert row["user_id"] == "u1"
    assert sorted(row["anonymous_ids"]) == ["a", "b"]
    assert row["first_seen_at"] == BASE_TIME
    assert row["last_seen_at"] == BASE_TIME + timedelta(hours=3)
    assert (row["events"], row["orders"], row["sessions"]) == (3, 2, 2)
    assert float(row["lifetime_value"]) == 42.25
    assert (row["last_order_id"], row["last_order_at"]) == ("o-2", BASE_TIME + timedelta(hours=3))


async def test_sessions_split_after_30_minutes_and_survive_a_new_pool(
    fresh_database_url: str,
) -> None:
    await migrate(fresh_database_url)
    times = [0, 10, 39, 70, 71]  # gaps: 10, 29, 31, 1 minutes
    events = [event("page_view", at=BASE_TIME + timedelta(minutes=m)) for m in times]
    for e in events[:3]:  # one message each, through one pool, then a "restart"
        pool = await create_sink_pool(fresh_database_url)
        await Processor(PostgresSink(pool)).process([message([e])])
        await pool.close()
    pool = await create_sink_pool(fresh_database_url)
    try:
        await Processor(PostgresSink(pool)).process([message(events[3:])])
        async with pool.acquire() as conn:
            sessions = await conn.fetch("SELECT * FROM sessions ORDER BY started_at")
            assert await aggregate_mismatches(conn, events) == {}
    finally:
        await pool.close()
    assert [(s["events"], s["started_at"]) for s in sessions] == [
        (3, BASE_TIME),
        (2, BASE_TIME + timedelta(minutes=70)),
    ]


async def test_client_session_ids_are_kept(processor: Processor, pool: asyncpg.Pool) -> None:
    events = [
        event("page_view", at=BASE_TIME, session_id="client-s1"),
        event("page_view", at=BASE_TIME + timedelta(hours=2), session_id="client-s1"),
    ]
    await processor.process([message(events)])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT array_agg(session_id) FROM sessions") == ["client-s1"]
        assert await conn.fetchval("SELECT count(session_id) FROM event_ids") == 0
        assert await conn.fetchval("SELECT count(*) FROM session_state") == 0


async def test_bad_messages_end_in_bad_events_once(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    refused = [event("page_view"), event("page_view")]
    bad_message = message(refused, kind="bad", message_id="bad-1")
    garbage = Message("m-garbage", b"\x93not an envelope", {})
    future_version = Message(
        "m-v2", envelope_of([event()]), {**envelope.attributes("events", 1), "schema_version": "2"}
    )
    for _ in range(2):  # redelivered: no second row
        await processor.process([bad_message, garbage, future_version])
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM bad_events ORDER BY message_key")
    assert [(r["message_key"], r["reason_class"]) for r in rows] == [
        ("bad-1/0/0", "validation"),
        ("bad-1/0/1", "validation"),
        ("m-garbage", "envelope"),
        ("m-v2", "envelope"),
    ]
    assert rows[0]["reason"] == "$.event_type: bad value 0"
    assert rows[0]["source"] == "web" and rows[0]["client_ip"] == "203.0.113.7"
    assert rows[2]["raw"] == b"\x93not an envelope"
    assert "schema_version '2'" in rows[3]["reason"]


async def test_an_event_the_contract_refuses_is_kept_as_bad(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    good = event("page_view")
    broken = {**event("page_view"), "event_type": "Not Valid"}
    await processor.process([message([good, broken], message_id="m1")])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM event_ids") == 1
        bad = await conn.fetchrow("SELECT * FROM bad_events")
    assert bad["message_key"] == "m1/0/1"
    assert bad["reason_class"] == "validation"
    assert "$.event_type" in bad["reason"]


async def test_a_message_the_database_refuses_does_not_hold_back_others(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    # PostgreSQL text cannot hold NUL: valid JSON, valid contract, but never storable.
    poison = message([event("page_view", page={"title": "a\u0000b"})], message_id="poison")
    sent = [event("page_view"), event("search")]
    fine = message(sent)
    await processor.process([fine, poison])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM event_ids") == 2
        bad = await conn.fetchrow("SELECT * FROM bad_events")
        assert await aggregate_mismatches(conn, sent) == {}
    assert (bad["message_key"], bad["reason_class"]) == ("poison", "processing")
    assert bad["raw"] == poison.data


async def test_prune_deletes_old_keys_and_activity_only(
    processor: Processor, pool: asyncpg.Pool
) -> None:
    await processor.process([message([event("page_view"), event("search", anonymous_id="b")])])
    async with pool.acquire() as conn:
        for table in ("event_ids", "visitor_activity"):
            await conn.execute(f"UPDATE {table} SET received_at = now() - interval '6 days'")
        await conn.execute(
            "UPDATE event_ids SET received_at = now() - interval '8 days'"
            " WHERE event_id = (SELECT event_id FROM event_ids ORDER BY 1 LIMIT 1)"
        )
        await conn.execute(
            "UPDATE visitor_activity SET received_at = now() - interval '8 days'"
            " WHERE visitor_key = 'b'"
        )
        counts = await db.prune(conn, db.parse_duration("7d"))
        assert (counts["event_ids"], counts["visitor_activity"]) == (1, 1)
        assert await conn.fetchval("SELECT count(*) FROM event_ids") == 1
        assert await conn.fetchval("SELECT visitor_key FROM visitor_activity") == "anon-1"
        assert await conn.fetchval("SELECT sum(events) FROM metrics_minute") == 2


async def test_prune_skips_rows_a_writer_holds(
    processor: Processor, pool: asyncpg.Pool, fresh_database_url: str
) -> None:
    """A batch holding old rows (its session state, activity a merge moves) is never waited
    on: those rows are left for the next prune, so prune cannot deadlock with the sink."""
    await processor.process([message([event("page_view"), event("search")])])
    async with pool.acquire() as conn:
        await conn.execute("UPDATE event_ids SET received_at = now() - interval '8 days'")
        await conn.execute("UPDATE visitor_activity SET received_at = now() - interval '8 days'")
        await conn.execute("UPDATE session_state SET last_seen_at = now() - interval '8 days'")
    writer = await db.connect(fresh_database_url)
    try:
        async with writer.transaction():
            await writer.execute("SELECT FROM visitor_activity FOR UPDATE")
            await writer.execute("SELECT FROM session_state FOR UPDATE")
            async with pool.acquire() as conn:
                counts = await asyncio.wait_for(db.prune(conn, db.parse_duration("7d")), 30)
        assert counts == {"session_state": 0, "event_ids": 2, "visitor_activity": 0}
        async with pool.acquire() as conn:
            counts = await db.prune(conn, db.parse_duration("7d"))
        assert counts == {"session_state": 1, "event_ids": 0, "visitor_activity": 1}
    finally:
        await writer.close()


def test_durations() -> None:
    assert db.parse_duration("7d") == timedelta(days=7)
    assert db.parse_duration("36h") == timedelta(hours=36)
    with pytest.raises(ValueError, match="7x"):
        db.parse_duration("7x")
