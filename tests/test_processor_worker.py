"""The streaming-pull worker end to end: Pub/Sub emulator -> worker -> real PostgreSQL.

Messages are published as the gateway publishes them (envelopes with their attributes). The
worker runs in-process (clean shutdown) or as `clickstream processor` subprocesses (killed
mid-stream and restarted).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message as ReceivedMessage
from google.pubsub_v1 import DeadLetterPolicy, PubsubMessage
from processor_testing import (
    COUNTED_EVENTS,
    TIMELINE,
    a_day_of_traffic,
    aggregate_mismatches,
    envelope_of,
    event,
    start_worker,
    stop_worker,
    wait_for,
)
from test_pubsub_conformance import endpoint_params

from clickstream.local_postgres import embedded_postgres, restart_embedded
from clickstream.pubsub_admin import ensure_topology
from clickstream_contract import envelope
from clickstream_contract.config import Settings
from gateway.pubsub import publisher_async_client
from processor.migrations import migrate
from processor.options import WorkerOptions
from processor.worker import serve, subscriber_client

# Quick batches so the tests see partial progress and redeliveries.
FAST = WorkerOptions(max_batch_events=200, max_batch_wait=0.01, min_backoff=0.2, max_backoff=1)


@pytest.fixture
async def settings(
    any_pubsub_emulator_host: str, pubsub_project: str, fresh_database_url: str
) -> Settings:
    await migrate(fresh_database_url)  # as `clickstream db migrate` does before a deployment
    return Settings(
        project=pubsub_project,
        pubsub_emulator_host=any_pubsub_emulator_host,
        database_url=fresh_database_url,
    )


@pytest.fixture(autouse=True)
def postgres_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKSTREAM_BIGQUERY", "off")


Publish = Callable[[str, list[bytes]], Awaitable[None]]


@pytest.fixture
async def publish(settings: Settings) -> AsyncIterator[Publish]:
    await ensure_topology(settings)
    client = publisher_async_client(settings)

    def message(body: bytes) -> PubsubMessage:
        try:
            decoded = envelope.decode(body)
        except envelope.EnvelopeError:  # garbage goes out without attributes
            return PubsubMessage(data=body)
        return PubsubMessage(
            data=body, attributes=envelope.attributes(decoded.kind, decoded.event_count)
        )

    async def publish(topic: str, bodies: list[bytes]) -> None:
        messages = [message(body) for body in bodies]
        for start in range(0, len(messages), 100):
            await client.publish(
                topic=settings.topic_path(topic), messages=messages[start : start + 100]
            )

    yield publish
    await client.transport.close()


async def check_exact(database_url: str, sent: list[dict] | None = None) -> None:
    """Every aggregate equals its recount from `sent`, or, without, agrees with the others."""
    conn = await asyncpg.connect(database_url)
    try:
        assert await aggregate_mismatches(conn, sent) == {}
    finally:
        await conn.close()


def chunks(events: list[dict], size: int) -> list[bytes]:
    return [envelope_of(events[i : i + size]) for i in range(0, len(events), size)]


async def test_worker_processes_everything_exactly_once(
    settings: Settings, publish: Publish
) -> None:
    events = a_day_of_traffic(visitors=30)
    bodies = chunks(events, 5)
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(settings, FAST, stop))
    await publish(settings.events_topic, bodies)
    await publish(settings.events_topic, bodies[:5])  # the gateway retried a publish
    await publish(settings.events_topic, [b"not an envelope"])
    await publish(settings.bad_events_topic, [envelope_of([event(), event()], kind="bad")])
    url = settings.database_url or ""
    await wait_for(url, COUNTED_EVENTS, len(events))
    await wait_for(url, "SELECT count(*) FROM bad_events", 3)
    await check_exact(url)
    stop.set()
    await asyncio.wait_for(worker, 30)  # clean shutdown
    conn = await asyncpg.connect(url)
    try:
        classes = await conn.fetch(
            "SELECT reason_class, count(*) FROM bad_events GROUP BY 1 ORDER BY 1"
        )
        row = await conn.fetchrow(
            f"SELECT timeline.session_id, s.referrer_class FROM {TIMELINE} JOIN sessions s"
            " USING (session_id) WHERE event_id = $1",
            uuid.UUID(events[0]["event_id"]),
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in classes] == [("envelope", 1), ("validation", 2)]
    assert row["session_id"]
    assert row["referrer_class"] in ("direct", "search", "social", "email")


async def test_worker_survives_lost_database_connections(
    settings: Settings, publish: Publish
) -> None:
    events = a_day_of_traffic(visitors=30, seed=11)
    bodies = chunks(events, 3)
    url = settings.database_url or ""
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(settings, FAST, stop))
    admin = await asyncpg.connect(url)
    try:
        await publish(settings.events_topic, bodies[:1])
        await wait_for(url, "SELECT count(*) > 0 FROM event_ids", True)  # the worker is up
        for i in range(1, len(bodies), 10):
            await publish(settings.events_topic, bodies[i : i + 10])
            # Kill the worker's connections, mid-transaction or idle: batches fail and retry.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            await asyncio.sleep(0.05)
        await wait_for(url, COUNTED_EVENTS, len(events))
        await check_exact(url)
    finally:
        await admin.close()
        stop.set()
        await asyncio.wait_for(worker, 30)


@pytest.mark.slow
@pytest.mark.parametrize("any_pubsub_emulator_host", endpoint_params(), indirect=True)
async def test_worker_killed_mid_stream_and_restarted(
    settings: Settings, publish: Publish, tmp_path: Path
) -> None:
    """With either emulator, every event is stored exactly once within 90 s of the kill."""
    events = a_day_of_traffic(visitors=250, seed=5)
    url = settings.database_url or ""
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    try:
        await publish(settings.events_topic, chunks(events, 2))
        await wait_for(url, "SELECT count(*) > 300 FROM event_ids", True)
    finally:
        assert stop_worker(first, signal.SIGKILL) == -signal.SIGKILL
    killed = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        stored_at_kill = await conn.fetchval("SELECT count(*) FROM event_ids")
    finally:
        await conn.close()
    second = start_worker(settings, log)
    try:
        await wait_for(url, COUNTED_EVENTS, len(events), within=90 - (time.monotonic() - killed))
        print(f"all {len(events)} events stored {time.monotonic() - killed:.1f} s after the kill")
        await check_exact(url, events)
        for _ in range(300):  # until it is up, so SIGTERM is handled
            if log.read_text().count("processing events") == 2:
                break
            await asyncio.sleep(0.1)
    finally:
        code = stop_worker(second)
    assert code == 0, log.read_text()[-3000:]
    print(f"{stored_at_kill} of {len(events)} events were stored when the worker was killed")
    assert "stopped after" in log.read_text()


@pytest.fixture
def own_postgres() -> Iterator[tuple[Any, str]]:
    """A PostgreSQL server of this test's own, which it may stop and start."""
    with embedded_postgres() as server:
        yield server, server.get_uri()


@pytest.mark.slow
async def test_postgres_restart_mid_stream_loses_nothing(
    own_postgres: tuple[Any, str],
    pubsub_emulator_host: str,
    pubsub_project: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, url = own_postgres
    await migrate(url)
    settings = Settings(
        project=pubsub_project, pubsub_emulator_host=pubsub_emulator_host, database_url=url
    )
    await ensure_topology(settings)
    client = publisher_async_client(settings)
    events = a_day_of_traffic(visitors=80, seed=13)
    bodies = chunks(events, 4)
    third = len(bodies) // 3

    async def publish(part: list[bytes]) -> None:
        for body in part:
            attributes = envelope.attributes("events", envelope.decode(body).event_count)
            await client.publish(
                topic=settings.topic_path(settings.events_topic),
                messages=[PubsubMessage(data=body, attributes=attributes)],
            )

    stop = asyncio.Event()
    worker = asyncio.create_task(serve(settings, FAST, stop))
    try:
        await publish(bodies[:third])
        await wait_for(url, "SELECT count(*) > 0 FROM event_ids", True)
        # Publish while the database is down, in the middle of a 2-second outage.
        restart = asyncio.create_task(asyncio.to_thread(restart_embedded, server, 2.0))
        await asyncio.sleep(0.5)
        await publish(bodies[third : 2 * third])
        await restart
        await publish(bodies[2 * third :])
        await wait_for(url, COUNTED_EVENTS, len(events))
        await check_exact(url)
        assert any("batch failed" in r.getMessage() for r in caplog.records)  # it saw the outage
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await client.transport.close()


def test_the_command_line_defaults_are_the_workers() -> None:
    from clickstream_contract.cli import build_parser
    from processor.cli import worker_options

    assert worker_options(build_parser().parse_args(["processor"])) == WorkerOptions()
    given = build_parser().parse_args(
        ["processor", "--max-batch-wait-ms", "20", "--concurrency", "5", "--retention", "2d"]
    )
    assert worker_options(given) == WorkerOptions(
        max_batch_wait=0.02, concurrency=5, retention=timedelta(days=2)
    )


def test_the_retention_comes_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the function's (Terraform sets `CLICKSTREAM_RETENTION`); a malformed one is named."""
    from clickstream_contract.cli import build_parser
    from processor.cli import worker_options

    monkeypatch.setenv("CLICKSTREAM_RETENTION", "30d")
    assert worker_options(build_parser().parse_args(["processor"])).retention == timedelta(days=30)
    given = build_parser().parse_args(["processor", "--retention", "36h"])
    assert worker_options(given).retention == timedelta(hours=36)
    monkeypatch.setenv("CLICKSTREAM_RETENTION", "30 days")
    with pytest.raises(ValueError, match=r"^CLICKSTREAM_RETENTION: duration '30 days' must be"):
        worker_options(build_parser().parse_args(["processor"]))
    with pytest.raises(ValueError, match=r"^--retention: duration '7x' must be"):
        worker_options(build_parser().parse_args(["processor", "--retention", "7x"]))


@pytest.mark.parametrize("emulator", endpoint_params())
def test_a_gone_workers_stream_takes_no_messages_after_its_lifetime(
    emulator: str,
    pubsub_emulator: Callable[[str], str],
    pubsub_project: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Google's emulator keeps leasing messages into a streaming pull whose client has gone
    (stopped or killed) until the stream's deadline: about half of what follows then reaches the
    live worker only a lease later, on a second delivery. The worker's streams have a lifetime."""
    host = pubsub_emulator(emulator)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    settings = Settings(project=pubsub_project, pubsub_emulator_host=host)
    publisher = pubsub_v1.PublisherClient()
    admin = pubsub_v1.SubscriberClient()
    topic, dead_letters = (settings.topic_path(f"t-{uuid.uuid4().hex[:8]}") for _ in range(2))
    subscription = settings.subscription_path(f"s-{uuid.uuid4().hex[:8]}")
    for name in (topic, dead_letters):
        publisher.create_topic(name=name)
    admin.create_subscription(  # a dead-letter policy, so that deliveries are counted
        request={
            "name": subscription,
            "topic": topic,
            "dead_letter_policy": DeadLetterPolicy(dead_letter_topic=dead_letters),
        }
    )
    lifetime = 2.0
    gone = subscriber_client(settings, lifetime)
    held = threading.Event()
    stream = gone.subscribe(subscription, lambda message: held.set())  # never acks
    publisher.publish(topic, b"probe").result(timeout=30)
    assert held.wait(30)  # its stream is open and delivering
    stream.cancel()
    stream.result(timeout=30)
    gone.close()
    time.sleep(lifetime + 1)  # past the gone stream's deadline

    live = subscriber_client(settings, 60.0)
    attempts: dict[bytes, int | None] = {}

    def receive(message: ReceivedMessage) -> None:
        attempts.setdefault(message.data, message.delivery_attempt)
        message.ack()

    stream = live.subscribe(subscription, receive)
    try:
        sent = [f"m{i}".encode() for i in range(20)]
        for data in sent:  # one at a time: each is handed to whichever stream asks first
            publisher.publish(topic, data).result(timeout=30)
            time.sleep(0.05)
        give_up = time.monotonic() + 60
        while not set(sent) <= attempts.keys() and time.monotonic() < give_up:
            time.sleep(0.05)
        assert {data: attempts.get(data) for data in sent} == dict.fromkeys(sent, 1)
    finally:
        stream.cancel()
        live.close()
        admin.close()
        publisher.stop()
