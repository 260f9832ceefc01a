"""The Cloud Functions entry point, served by functions-framework as Cloud Run would: a root
`main.py` importing `processor.function.process_pubsub` (as Terraform deploys it), CloudEvents
POSTed to it the way Eventarc delivers Pub/Sub messages."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from processor_testing import a_day_of_traffic, aggregate_mismatches, envelope_of, wait_for

from clickstream_contract import envelope
from processor.core import Message, Processor
from processor.function import CONFLICT_RETRIES, process_retrying_conflicts
from processor.migrations import migrate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_function(
    tmp_path: Path, database_url: str, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    source = tmp_path / "main.py"
    source.write_text("from processor.function import process_pubsub  # noqa: F401\n")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CLICKSTREAM_DB_PASSWORD": "from-secret-manager",  # trust auth locally: ignored
        "CLICKSTREAM_BIGQUERY": "off",
        **(extra_env or {}),
    }
    log = tmp_path / "function.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "functions_framework", "--target", "process_pubsub",
             "--source", str(source), "--signature-type", "cloudevent",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"functions-framework did not start: {log.read_text()}"
                    ) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def function_url(tmp_path: Path, fresh_database_url: str) -> AsyncIterator[str]:
    await migrate(fresh_database_url)  # as `clickstream db migrate` does before a deployment
    for url in serve_function(tmp_path, fresh_database_url):
        yield url


def pubsub_cloud_event(data: bytes, attributes: dict[str, str], message_id: str) -> CloudEvent:
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/p/topics/events",
            "id": message_id,
        },
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attributes,
                "messageId": message_id,
                "publishTime": "2026-03-02T10:00:01.5Z",
            },
            "subscription": "projects/p/subscriptions/eventarc-processor",
        },
    )


def post(url: str, event: CloudEvent) -> httpx.Response:
    headers, body = to_structured(event)
    return httpx.post(url, headers=headers, content=body, timeout=60)


async def test_function_processes_cloud_events(function_url: str, fresh_database_url: str) -> None:
    events = a_day_of_traffic(visitors=5)
    body = envelope_of(events)
    ok = pubsub_cloud_event(body, envelope.attributes("events", len(events)), "1001")
    assert post(function_url, ok).status_code == 200
    assert post(function_url, ok).status_code == 200  # Pub/Sub redelivered it
    garbage = pubsub_cloud_event(b"junk", {}, "1002")
    assert post(function_url, garbage).status_code == 200  # stored as bad, not retried
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM event_ids") == len(events)
        assert await aggregate_mismatches(conn) == {}
        bad = await conn.fetchrow("SELECT * FROM bad_events")
    finally:
        await conn.close()
    assert (bad["message_key"], bad["reason_class"], bad["raw"]) == ("1002", "envelope", b"junk")
    assert bad["received_at"].isoformat() == "2026-03-02T10:00:01.500000+00:00"


async def test_an_instance_prunes_what_is_older_than_the_retention(
    tmp_path: Path, fresh_database_url: str
) -> None:
    """With `CLICKSTREAM_RETENTION` set (Terraform's var.retention_days), an instance prunes
    dedup keys and timeline rows past it when it starts, and hourly after."""
    await migrate(fresh_database_url)
    old = a_day_of_traffic(visitors=2, seed=1)
    for url in serve_function(tmp_path, fresh_database_url):  # no retention: nothing pruned
        assert post(url, pubsub_cloud_event(envelope_of(old), {}, "2001")).status_code == 200
    conn = await asyncpg.connect(fresh_database_url)
    try:
        for table in ("event_ids", "visitor_activity"):  # stored long ago
            await conn.execute(f"UPDATE {table} SET received_at = '2000-01-01T00:00Z'")
        new = a_day_of_traffic(visitors=3, seed=2)
        for url in serve_function(tmp_path, fresh_database_url, {"CLICKSTREAM_RETENTION": "30d"}):
            assert post(url, pubsub_cloud_event(envelope_of(new), {}, "2002")).status_code == 200
            await wait_for(
                fresh_database_url,
                "SELECT count(*) FROM visitor_activity WHERE received_at = '2000-01-01T00:00Z'",
                0,
            )
        assert await conn.fetchval("SELECT count(*) FROM event_ids") == len(new)
        assert await conn.fetchval("SELECT count(*) FROM visitor_activity") > 0  # the new ones
        # The aggregates keep every event.
        assert await conn.fetchval("SELECT sum(events) FROM metrics_minute") == len(old) + len(new)
    finally:
        await conn.close()
    assert "pruned {'session_state'" in (tmp_path / "function.log").read_text()


def test_function_fails_the_invocation_on_transient_errors(tmp_path: Path) -> None:
    unreachable = f"postgresql://clickstream@127.0.0.1:{free_port()}/clickstream"
    for url in serve_function(tmp_path, unreachable):
        event = pubsub_cloud_event(envelope_of(a_day_of_traffic(visitors=1)), {}, uuid.uuid4().hex)
        response = post(url, event)
        assert response.status_code == 500  # the trigger retries the message


class ConflictingSink:
    """A sink whose first `conflicts` writes lose a deadlock, as PostgreSQL reports it."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.writes = 0

    async def write(self, events: list[Any], bad: list[Any]) -> None:
        self.writes += 1
        if self.writes <= self.conflicts:
            raise asyncpg.DeadlockDetectedError("deadlock detected")


async def test_transaction_conflicts_are_retried_in_the_invocation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = a_day_of_traffic(visitors=1)
    message = Message("m-1", envelope_of(events), envelope.attributes("events", len(events)))
    sink = ConflictingSink(conflicts=2)
    await process_retrying_conflicts(Processor(sink), [message])
    assert sink.writes == 3
    assert len([r for r in caplog.records if "transaction conflict" in r.message]) == 2

    hopeless = ConflictingSink(conflicts=CONFLICT_RETRIES + 1)
    with pytest.raises(asyncpg.DeadlockDetectedError):  # the invocation fails: Pub/Sub retries
        await process_retrying_conflicts(Processor(hopeless), [message])
    assert hopeless.writes == CONFLICT_RETRIES + 1
    assert "giving up" in caplog.records[-1].message
