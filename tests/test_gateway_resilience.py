"""The gateway under pressure: a full queue, a failing Pub/Sub, SIGTERM under load, many workers,
and arbitrary input (never a 500)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_server import (
    GatewayProcess,
    event,
    published_events,
    pull,
    running_gateway,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pubsub import publisher_async_client

pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag")
HEADERS = {"authorization": "Bearer test-key", "content-type": "application/json"}


def new_project() -> str:
    return f"test-gw-{uuid.uuid4().hex[:10]}"


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


async def test_a_full_publish_queue_answers_429_with_retry_after(
    pubsub_emulator_host: str, tmp_path: Path
) -> None:
    # Events wait 1.5 s for their batch, and the queue holds about one request.
    env = {
        "CLICKSTREAM_GATEWAY_FLUSH_MS": "1500",
        "CLICKSTREAM_GATEWAY_QUEUE_MAX_BYTES": "400",
        "CLICKSTREAM_GATEWAY_RETRY_AFTER_S": "2",
    }
    with running_gateway(pubsub_emulator_host, new_project(), tmp_path, env) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            first = dumps(event())
            waiting = asyncio.create_task(client.post("/v1/events", content=first, headers=HEADERS))
            await asyncio.sleep(0.5)
            refused = await client.post("/v1/events", content=dumps(event()), headers=HEADERS)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "2"
            assert "queue is full" in refused.json()["error"]
            accepted = await waiting
            assert accepted.status_code == 202
        pulled = await pull(gw.settings, gw.settings.events_subscription, events=1)
        assert published_events(pulled) == [first]


async def test_failing_pubsub_answers_503_and_recovers(
    pubsub_emulator_host: str, tmp_path: Path
) -> None:
    with running_gateway(pubsub_emulator_host, new_project(), tmp_path) as gw:
        admin = publisher_async_client(gw.settings)
        topic = gw.settings.topic_path(gw.settings.events_topic)
        try:
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
                await admin.delete_topic(topic=topic)
                failed = await client.post("/v1/events", content=dumps(event()), headers=HEADERS)
                assert failed.status_code == 503, failed.text
                assert failed.headers["retry-after"] == "1"
                assert "NOT_FOUND" in failed.json()["error"]
                # While Pub/Sub fails, requests are refused at once rather than queued.
                again = await client.post("/v1/events", content=dumps(event()), headers=HEADERS)
                assert again.status_code == 503
                await asyncio.sleep(1.1)  # readiness is cached for a second
                for ready, health in (("/ready", "/health"), ("/readyz", "/healthz")):
                    assert (await client.get(ready)).status_code == 503
                    assert (await client.get(health)).status_code == 200

                await admin.create_topic(name=topic)
                deadline = time.monotonic() + 15
                status = 0
                while time.monotonic() < deadline and status != 202:
                    await asyncio.sleep(0.3)
                    response = await client.post(
                        "/v1/events", content=dumps(event()), headers=HEADERS
                    )
                    status = response.status_code
                assert status == 202
        finally:
            await admin.transport.close()
        assert "NOT_FOUND" in gw.log()


async def test_sigterm_under_load_publishes_every_accepted_event(
    pubsub_emulator_host: str, tmp_path: Path
) -> None:
    accepted: list[bytes] = []
    statuses: list[int] = []
    answered_after_signal: list[httpx.Response] = []
    signalled = asyncio.Event()
    with running_gateway(pubsub_emulator_host, new_project(), tmp_path) as gw:
        stop = asyncio.Event()

        async def sender(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                events = [dumps(event()) for _ in range(10)]
                body = b'{"events":[' + b",".join(events) + b"]}"
                try:
                    response = await client.post("/v1/batch", content=body, headers=HEADERS)
                except httpx.TransportError:
                    await asyncio.sleep(0.01)  # the server is going away: keep trying
                    continue
                statuses.append(response.status_code)
                if response.status_code == 202:
                    assert response.json()["accepted"] == 10
                    accepted.extend(events)
                    if signalled.is_set():
                        answered_after_signal.append(response)

        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as client:
            tasks = [asyncio.create_task(sender(client)) for _ in range(32)]
            await asyncio.sleep(1.5)
            before = len(accepted)
            gw.proc.send_signal(signal.SIGTERM)
            signalled.set()
            code = await asyncio.to_thread(gw.proc.wait, 60)
            stop.set()
            await asyncio.gather(*tasks)
        assert code == 0, gw.log()
        assert before > 0
        # Requests in flight at SIGTERM were answered once their events were published.
        assert answered_after_signal, "no request was answered after SIGTERM"
        assert "publish queue drained" in gw.log()
        assert set(statuses) <= {202, 503}, statuses

    pulled = published_events(
        await pull(gw.settings, gw.settings.events_subscription, events=len(accepted), wait_s=60)
    )
    missing = set(accepted) - set(pulled)
    assert not missing, f"{len(missing)} of {len(accepted)} accepted events were not published"
    # Nothing published twice; requests cut off by the shutdown may add events nobody saw 202.
    assert len(pulled) == len(set(pulled))


async def test_metrics_add_up_across_workers(pubsub_emulator_host: str, tmp_path: Path) -> None:
    with running_gateway(pubsub_emulator_host, new_project(), tmp_path, workers=2) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            for _ in range(20):
                # A new connection each time so both workers serve some.
                async with httpx.AsyncClient(base_url=gw.url, timeout=30) as fresh:
                    response = await fresh.post(
                        "/v1/events", content=dumps(event()), headers=HEADERS
                    )
                    assert response.status_code == 202
            for _ in range(4):
                text = (await client.get("/metrics", headers={"connection": "close"})).text
                line = next(
                    line
                    for line in text.splitlines()
                    if line.startswith('gateway_requests_total{route="/v1/events",status="202"}')
                )
                assert float(line.split()[-1]) == 20
        await pull(gw.settings, gw.settings.events_subscription, events=20)


@pytest.fixture(scope="module")
def fuzz_gateway(
    pubsub_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with running_gateway(
        pubsub_emulator_host, new_project(), tmp_path_factory.mktemp("fuzz")
    ) as gw:
        yield gw


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(dumps)
    | st.fixed_dictionaries({"events": st.lists(json_values, max_size=5)}).map(dumps)
    | st.builds(
        lambda fields: dumps(event(**fields)),
        st.dictionaries(
            st.sampled_from(["event_type", "occurred_at", "anonymous_id", "page", "properties"]),
            json_values,
            max_size=2,
        ),
    )
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/events", "/v1/batch"]),
    body=bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "text/html", ""]),
    encoding=st.sampled_from(["", "gzip", "deflate"]),
)
def test_no_input_gets_a_500(
    fuzz_gateway: GatewayProcess, path: str, body: bytes, content_type: str, encoding: str
) -> None:
    headers = {"authorization": "Bearer test-key", "content-type": content_type}
    if encoding:
        headers["content-encoding"] = encoding
    response = httpx.post(f"{fuzz_gateway.url}{path}", content=body, headers=headers, timeout=30)
    assert response.status_code in {202, 400, 413, 415}, (response.status_code, response.text)
    assert "unexpected error" not in fuzz_gateway.log()
