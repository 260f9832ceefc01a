"""`clickstream replay`: kept events go back through the real pipeline and count once.

Pub/Sub emulator, the streaming-pull worker in-process and real PostgreSQL, as in
tests/test_processor_worker.py. Bad events are refused by the gateway's own validation under a
stricter clock-skew rule, then replayed under the contract's real one; a dead letter is made by
the worker itself while its PostgreSQL is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from google.protobuf.duration_pb2 import Duration
from google.pubsub_v1 import PubsubMessage, RetryPolicy
from processor_testing import aggregate_mismatches, event, wait_for

import clickstream_contract.event as contract
from clickstream.local_postgres import embedded_postgres, start_embedded, stop_embedded
from clickstream.local_state import write_stack_env
from clickstream.pubsub_admin import (
    ensure_topology,
    processor_subscription,
    subscriber_async_client,
)
from clickstream.replay import (
    Filters,
    SettingError,
    replay_bad_events,
    replay_dead_letters,
    replay_settings,
)
from clickstream_contract import envelope
from clickstream_contract.config import Settings
from gateway import segment
from gateway.pubsub import publisher_async_client
from gateway.validation import check_batch
from processor.migrations import migrate, migration_files
from processor.options import WorkerOptions
from processor.worker import serve

pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag")

# Quick batches, and a nack soon after a failure, so five deliveries fit in a short outage.
FAST = WorkerOptions(
    max_batch_events=200, max_batch_wait=0.01, min_backoff=0.1, max_backoff=0.2, retry_for=0.3
)
CLIENT = {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"}


@pytest.fixture(autouse=True)
def postgres_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKSTREAM_BIGQUERY", "off")


@contextlib.asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[None]:
    """The streaming-pull worker on the settings' subscriptions, its schema applied."""
    await migrate(settings.database_url)  # as `clickstream db migrate` does before a deployment
    await ensure_topology(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, FAST, stop))
    try:
        # Ready once its pool is connected.
        await wait_for(
            settings.database_url or "",
            "SELECT max(version) FROM schema_migrations WHERE EXISTS (SELECT FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid())",
            migration_files()[-1].stem,
        )
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def publish(settings: Settings, topic: str, data: bytes, attributes: dict[str, str]) -> None:
    client = publisher_async_client(settings)
    try:
        message = PubsubMessage(data=data, attributes=attributes)
        await client.publish(topic=settings.topic_path(topic), messages=[message])
    finally:
        await client.transport.close()


async def rows(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def counted_once(database_url: str, expected: int) -> None:
    """`expected` events counted, and the aggregates agree with each other."""
    await wait_for(database_url, "SELECT coalesce(sum(events), 0) FROM metrics_minute", expected)
    conn = await asyncpg.connect(database_url)
    try:
        assert await aggregate_mismatches(conn) == {}
    finally:
        await conn.close()


async def copy_of(settings: Settings, topic: str) -> str:
    """A subscription of the test's own on `topic`: what was published there, to read back."""
    client = subscriber_async_client(settings)
    name = settings.subscription_path(f"{topic}-copy")
    try:
        await client.create_subscription(name=name, topic=settings.topic_path(topic))
    finally:
        await client.transport.close()
    return name


async def published(settings: Settings, subscription: str) -> list[envelope.Envelope]:
    client = subscriber_async_client(settings)
    try:
        pulled = await client.pull(subscription=subscription, max_messages=100, timeout=10)
        return [
            envelope.decode(r.message.data, dict(r.message.attributes))
            for r in pulled.received_messages
        ]
    finally:
        await client.transport.close()


@pytest.fixture
def settings(pubsub_emulator_host: str, pubsub_project: str, fresh_database_url: str) -> Settings:
    return Settings(
        project=pubsub_project,
        pubsub_emulator_host=pubsub_emulator_host,
        database_url=fresh_database_url,
    )


def refused_at_the_gateway(events: list[dict[str, Any]], received_at: datetime) -> bytes:
    """The events-bad message the gateway publishes for this batch, under the current rules."""
    checked = check_batch(json.dumps({"events": events}).encode(), 32 * 1024, 500)
    assert not checked.good
    group = envelope.Group(
        received_at=received_at,
        source="web",
        events=checked.bad,
        reasons=checked.reasons,
        **CLIENT,
    )
    return envelope.encode("bad", [group])


async def test_bad_events_refused_under_a_stricter_rule_are_replayed_once(
    settings: Settings,
) -> None:
    url = settings.database_url or ""
    now = datetime.now(UTC).replace(microsecond=0)
    ahead = [event(at=now + timedelta(hours=2), anonymous_id=f"a{i}") for i in range(5)]
    never = event(at=now, anonymous_id=None)  # no anonymous_id nor user_id: still refused
    with pytest.MonkeyPatch.context() as stricter:  # one hour ahead at most, then relaxed
        stricter.setattr(contract, "MAX_CLOCK_AHEAD", timedelta(hours=1))
        stricter.setattr(contract, "_latest", (float("-inf"), contract.EARLIEST_OCCURRED_AT))
        bad = refused_at_the_gateway([*ahead, never], received_at=now - timedelta(minutes=5))

    async with worker(settings):
        await publish(settings, settings.bad_events_topic, bad, envelope.attributes("bad", 6))
        await wait_for(url, "SELECT count(*) FROM bad_events", 6)

        dry = await replay_bad_events(settings, Filters(), dry_run=True)
        assert (sum(dry.passed.values()), sum(dry.failing.values())) == (5, 1)
        [(skew_reason, five)] = dry.passed.items()
        assert "occurred_at" in skew_reason and five == 5
        assert "anonymous_id" in next(iter(dry.failing))
        stamped = "SELECT count(*) FROM bad_events WHERE replayed_at IS NOT NULL"
        assert (await rows(url, stamped))[0][0] == 0

        copy = await copy_of(settings, settings.events_topic)
        report = await replay_bad_events(settings, Filters(), dry_run=False)
        assert report.passed == dry.passed and report.failing == dry.failing
        assert report.events == 5
        await counted_once(url, 5)
        assert (await rows(url, stamped))[0][0] == 5
        # Sent back as the gateway sent them: same bytes (event_id...), stamps and client.
        [replayed] = await published(settings, copy)
        [group] = replayed.groups
        assert [json.loads(e) for e in group.events] == ahead
        assert (group.received_at, group.source, group.client_ip, group.user_agent) == (
            now - timedelta(minutes=5),
            "web",
            CLIENT["client_ip"],
            CLIENT["user_agent"],
        )

        again = await replay_bad_events(settings, Filters(), dry_run=False)
        assert (sum(again.passed.values()), sum(again.failing.values())) == (0, 1)

        # A run stopped between publishing and stamping publishes the same events again. The
        # late arrival rides in the same message, so once it is stored the copies were seen.
        await rows(url, "UPDATE bad_events SET replayed_at = NULL")
        late = event(at=now, anonymous_id="late")
        await rows(
            url,
            "INSERT INTO bad_events (received_at, source, reason, reason_class, raw, client_ip,"
            " user_agent) VALUES ($1, 'web', 'refused before a fix', 'validation', $2, $3, $4)",
            now - timedelta(minutes=5),
            json.dumps(late).encode(),
            CLIENT["client_ip"],
            CLIENT["user_agent"],
        )
        rerun = await replay_bad_events(settings, Filters(), dry_run=False)
        assert sum(rerun.passed.values()) == 6
        await counted_once(url, 6)


async def test_filters_choose_what_is_replayed(settings: Settings) -> None:
    url = settings.database_url or ""
    now = datetime.now(UTC)
    async with worker(settings):
        await rows(
            url,
            "INSERT INTO bad_events (received_at, source, reason, reason_class, raw)"
            " SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],"
            " $5::bytea[])",
            [now - timedelta(days=2), now, now],
            ["web", "web", "app"],
            ["Expected `str` - at `$.page`", "Expected `str` - at `$.page`", "other"],
            ["validation"] * 3,
            [json.dumps(event(at=now)).encode() for _ in range(3)],
        )
        recent_web = Filters(since=now - timedelta(hours=1), reason="$.PAGE", source="web")
        report = await replay_bad_events(settings, recent_web, dry_run=False)
        assert report.passed == {"Expected `str` - at `$.page`": 1}
        await counted_once(url, 1)
        left = await rows(url, "SELECT source FROM bad_events WHERE replayed_at IS NULL")
        assert sorted(r["source"] for r in left) == ["app", "web"]


async def test_a_segment_message_is_replayed_as_the_gateway_maps_it(settings: Settings) -> None:
    url = settings.database_url or ""
    now = datetime.now(UTC).replace(microsecond=0)
    message = {"type": "page", "messageId": "m-1", "anonymousId": "a-1", "timestamp": now}
    raw = json.dumps(message, default=datetime.isoformat).encode()
    async with worker(settings):
        await rows(
            url,
            "INSERT INTO bad_events (received_at, source, reason, reason_class, raw)"
            " VALUES ($1, 'web', 'refused before a fix', 'validation', $2)",
            now,
            raw,
        )
        copy = await copy_of(settings, settings.events_topic)
        report = await replay_bad_events(settings, Filters(), dry_run=False)
        assert report.passed == {"refused before a fix": 1}
        await counted_once(url, 1)
        [replayed] = await published(settings, copy)
        [[sent]] = [group.events for group in replayed.groups]
        [expected] = segment.check_single_message(raw, "web", "page", 32 * 1024).good
        assert json.loads(sent)["event_id"] == json.loads(expected)["event_id"]


@pytest.fixture
def own_postgres() -> Iterator[tuple[Any, str]]:
    """A PostgreSQL server of this test's own, which it may stop and start."""
    with embedded_postgres() as server:
        yield server, server.get_uri()


async def peek(settings: Settings, subscription: str) -> list[bytes]:
    """The data of the messages waiting in `subscription`, left there."""
    client = subscriber_async_client(settings)
    path = settings.subscription_path(subscription)
    try:
        pulled = await client.pull(subscription=path, max_messages=100, return_immediately=True)
        received = list(pulled.received_messages)
        if received:
            await client.modify_ack_deadline(
                subscription=path,
                ack_ids=[r.ack_id for r in received],
                ack_deadline_seconds=0,
            )
        return [r.message.data for r in received]
    finally:
        await client.transport.close()


async def fast_redelivery(settings: Settings) -> None:
    """The events subscription as deployed, but redelivering at once and dead-lettering after
    Pub/Sub's least number of attempts, so that a short outage dead-letters a message."""
    subscription = processor_subscription(
        settings, settings.events_subscription, settings.events_topic, None
    )
    subscription.retry_policy = RetryPolicy(
        minimum_backoff=Duration(seconds=0), maximum_backoff=Duration(nanos=100_000_000)
    )
    subscription.dead_letter_policy.max_delivery_attempts = 5
    publisher = publisher_async_client(settings)
    subscriber = subscriber_async_client(settings)
    try:
        for topic in (settings.events_topic, settings.dead_letter_topic):
            await publisher.create_topic(name=settings.topic_path(topic))
        await subscriber.create_subscription(request=subscription)
    finally:
        await publisher.transport.close()
        await subscriber.transport.close()


async def test_a_message_dead_lettered_while_postgres_was_down_is_replayed_once(
    own_postgres: tuple[Any, str], pubsub_emulator_host: str, pubsub_project: str
) -> None:
    server, url = own_postgres
    settings = Settings(
        project=pubsub_project, pubsub_emulator_host=pubsub_emulator_host, database_url=url
    )
    await fast_redelivery(settings)
    now = datetime.now(UTC)
    events = [event(at=now, anonymous_id=f"v{i}") for i in range(3)]
    data = envelope.encode(
        "events", [envelope.Group(now, "web", [json.dumps(e).encode() for e in events])]
    )
    async with worker(settings):
        await asyncio.to_thread(stop_embedded, server)
        try:
            await publish(settings, settings.events_topic, data, envelope.attributes("events", 3))
            # Garbage that reached the dead-letter topic: it must stay there.
            await publish(
                settings, settings.dead_letter_topic, b"garbage", {"content_type": "text/x"}
            )
            for _ in range(300):
                waiting = await peek(settings, settings.dead_letter_subscription)
                if data in waiting:
                    break
                await asyncio.sleep(0.1)
            assert data in waiting, "the worker did not dead-letter the message during the outage"
        finally:
            await asyncio.to_thread(start_embedded, server)

        progress = io.StringIO()
        report = await replay_dead_letters(settings, None, progress)
        assert (report.replayed, report.events) == (1, 3)
        [(reason, one)] = report.kept.items()
        assert "content_type" in reason and one == 1
        assert "1 sent back" in progress.getvalue()
        await counted_once(url, 3)
        assert await peek(settings, settings.dead_letter_subscription) == [b"garbage"]

        again = await replay_dead_letters(settings, None)
        assert (again.replayed, sum(again.kept.values())) == (0, 1)


def test_settings_come_from_the_running_stack_or_name_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="DATABASE_URL is not set"):
        replay_settings({"CLICKSTREAM_STATE_DIR": str(tmp_path)}, database=True, pubsub=False)
    with pytest.raises(SettingError, match="GOOGLE_CLOUD_PROJECT"):
        replay_settings({"CLICKSTREAM_STATE_DIR": str(tmp_path)}, database=False, pubsub=True)
    write_stack_env(
        tmp_path, {"DATABASE_URL": "postgresql://stack/db", "PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}
    )
    local = replay_settings({"CLICKSTREAM_STATE_DIR": str(tmp_path)}, database=True, pubsub=True)
    assert (local.database_url, local.pubsub_emulator_host) == (
        "postgresql://stack/db",
        "127.0.0.1:1",
    )


def test_a_missing_or_wrong_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # nothing set, no stack running
    cli = [sys.executable, "-m", "clickstream_contract.cli", "replay"]
    for args, expected in [
        (["bad-events"], "clickstream replay bad-events: DATABASE_URL is not set"),
        (["dead-letters"], "clickstream replay dead-letters: no Pub/Sub to publish to"),
        (["bad-events", "--since", "soon"], "argument --since: 'soon' is neither"),
    ]:
        done = subprocess.run(cli + args, env=env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode != 0
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    unreachable = {**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    done = subprocess.run(
        [*cli, "bad-events", "--dry-run"], env=unreachable, cwd=tmp_path, capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.stderr.startswith("clickstream replay bad-events: PostgreSQL: ")
    assert len(done.stderr.splitlines()) == 1
