"""The deployed topology, locally: Pub/Sub pushes into `clickstream function --instances 4`
(functions-framework, four processes with a pool each, behind one port) and every aggregate
stays exact under concurrent writers.

The workload mixes sign-ins (events with a user id beside the anonymous id), messages the
gateway published twice, and the same events again in other messages. Deadlocks and
serialization failures between the instances are retried inside the invocation; the test
counts them from the function's log, and allows at most one per hundred messages to reach
Pub/Sub as a failed push (then redelivered after the 10 s minimum backoff).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from google.pubsub_v1 import PubsubMessage
from processor_testing import a_day_of_traffic, aggregate_mismatches, envelope_of, wait_for

from clickstream.emulators.launch import stop_process
from clickstream.pubsub_admin import ensure_topology
from clickstream.push import start_function
from clickstream_contract import envelope
from clickstream_contract.config import Settings
from gateway.pubsub import publisher_async_client

INSTANCES = 4


@pytest.fixture
async def pushed(
    pubsub_emulator_host: str, pubsub_project: str, fresh_database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Settings, Path]]:
    """The processor subscriptions pushing into four function instances."""
    settings = Settings(
        project=pubsub_project,
        pubsub_emulator_host=pubsub_emulator_host,
        database_url=fresh_database_url,
    )
    env = {
        "GOOGLE_CLOUD_PROJECT": pubsub_project,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator_host,
        "DATABASE_URL": fresh_database_url,
        "CLICKSTREAM_BIGQUERY": "off",
    }
    log = tmp_path / "function.log"
    function, url = start_function(env, INSTANCES, log)
    try:
        await ensure_topology(settings, push_endpoint=url)
        yield settings, log
    finally:
        stop_process(function)


async def test_four_instances_keep_every_aggregate_exact(
    pushed: tuple[Settings, Path],
) -> None:
    settings, log = pushed
    events = a_day_of_traffic(visitors=90, seed=21)
    bodies = [envelope_of(events[i : i + 3]) for i in range(0, len(events), 3)]
    again = bodies[::10]  # the gateway published these twice
    regrouped = [envelope_of(events[i : i + 7]) for i in range(0, len(events) // 4, 7)]
    messages = bodies + again + regrouped
    client = publisher_async_client(settings)
    try:
        for start in range(0, len(messages), 100):
            await client.publish(
                topic=settings.topic_path(settings.events_topic),
                messages=[
                    PubsubMessage(
                        data=body,
                        attributes=envelope.attributes("events", envelope.decode(body).event_count),
                    )
                    for body in messages[start : start + 100]
                ],
            )
    finally:
        await client.transport.close()
    url = settings.database_url or ""
    await wait_for(url, "SELECT count(*) FROM event_ids", len(events), within=120)
    conn = await asyncpg.connect(url)
    try:
        assert await aggregate_mismatches(conn, events) == {}
    finally:
        await conn.close()
    text = log.read_text(errors="replace")
    redelivered = text.count("giving up")
    retried = text.count("transaction conflict") - redelivered
    print(f"{len(messages)} messages: {retried} conflicts retried in place, {redelivered} failed")
    assert redelivered <= len(messages) // 100, text[-3000:]
