"""The gateway under Granian against the Pub/Sub emulator: what it answers and what it publishes.

One gateway serves this module; each test pulls back what its requests published, so the
subscriptions are empty again when the next test starts.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from gateway_server import (
    GatewayProcess,
    event,
    published_events,
    pull,
    running_gateway,
)

from clickstream_contract import envelope
from gateway.tracker import TRACKER_PATH, tracker_script

ORIGIN = "https://shop.example.com"
LIMITS = {
    "CLICKSTREAM_CORS_ORIGINS": f"{ORIGIN},https://other.example.com",
    "CLICKSTREAM_GATEWAY_MAX_EVENT_BYTES": "2048",
    "CLICKSTREAM_GATEWAY_MAX_REQUEST_BYTES": "16384",
    "CLICKSTREAM_GATEWAY_MAX_BATCH_EVENTS": "20",
}
BEARER = {"authorization": "Bearer test-key", "content-type": "application/json"}
# Pulls return at once when nothing is there, so a test never waits out a long poll.
pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag")


@pytest.fixture(scope="module")
def gateway(
    pubsub_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    project = f"test-gw-{uuid.uuid4().hex[:10]}"
    with running_gateway(
        pubsub_emulator_host, project, tmp_path_factory.mktemp("gateway"), LIMITS
    ) as gw:
        yield gw


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


async def test_accepted_events_are_published_exactly_once_with_server_stamps(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    single = dumps(event(user_id="u-1"))
    good = [dumps(event(anonymous_id=f"a-{i}")) for i in range(3)]
    bad = dumps(event(event_type="Not A Type"))
    batch = b'{"events": [' + b",".join([good[0], bad, good[1], good[2]]) + b"]}"
    headers = {**BEARER, "content-type": "application/json", "user-agent": "test-agent/1"}

    r1 = await client.post("/v1/events", content=single, headers=headers)
    r2 = await client.post("/v1/batch", content=batch, headers=headers)

    assert r1.status_code == 202, r1.text
    assert r1.json() == {"accepted": 1, "rejected": []}
    assert r2.status_code == 202, r2.text
    body = r2.json()
    assert body["accepted"] == 3
    [rejection] = body["rejected"]
    assert rejection["index"] == 1
    assert "$.event_type" in rejection["error"] and "regex" in rejection["error"]

    pulled = await pull(gateway.settings, gateway.settings.events_subscription, events=4)
    assert sorted(published_events(pulled)) == sorted([single, *good])
    for message in pulled:
        assert message.attributes["content_type"] == envelope.CONTENT_TYPE
        assert message.attributes["kind"] == "events"
        assert int(message.attributes["event_count"]) == message.envelope.event_count
        for group in message.envelope.groups:
            assert group.source == "web"
            assert group.user_agent == "test-agent/1"
            assert group.client_ip == "127.0.0.1"
            assert group.received_at.tzinfo is not None

    bad_pulled = await pull(gateway.settings, gateway.settings.bad_events_subscription, events=1)
    [bad_message] = bad_pulled
    assert bad_message.attributes["kind"] == "bad"
    [group] = bad_message.envelope.groups
    assert group.events == [bad]
    assert group.reasons == [rejection["error"]]


async def test_an_invalid_single_event_is_refused_alone_and_kept_as_bad(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    raw = dumps(event(anonymous_id=None))
    response = await client.post("/v1/events", content=raw, headers=BEARER)
    assert response.status_code == 202
    assert response.json()["accepted"] == 0
    [rejection] = response.json()["rejected"]
    assert "anonymous_id" in rejection["error"] and "user_id" in rejection["error"]
    pulled = await pull(gateway.settings, gateway.settings.bad_events_subscription, events=1)
    assert published_events(pulled) == [raw]


@pytest.mark.parametrize(
    ("headers", "params", "source"),
    [
        ({"authorization": "Bearer other-key"}, {}, "backend"),
        ({"authorization": "Basic " + base64.b64encode(b"rotated-key:").decode()}, {}, "web"),
        ({"x-write-key": "other-key"}, {}, "backend"),
        ({}, {"writeKey": "test-key"}, "web"),
    ],
    ids=["bearer", "basic", "x-write-key", "query"],
)
async def test_each_way_of_presenting_the_write_key_stamps_its_source(
    gateway: GatewayProcess,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, str],
    source: str,
) -> None:
    raw = dumps(event())
    response = await client.post(
        "/v1/events",
        content=raw,
        headers={**headers, "content-type": "application/json"},
        params=params,
    )
    assert response.status_code == 202, response.text
    pulled = await pull(gateway.settings, gateway.settings.events_subscription, events=1)
    assert published_events(pulled) == [raw]
    assert pulled[0].envelope.groups[0].source == source


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-key"},
        {"authorization": "Bearer test-key-but-longer"},
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Digest test-key"},
        {"x-write-key": "test"},
    ],
    ids=["missing", "unknown", "prefix", "bad-basic", "other-scheme", "short"],
)
async def test_missing_or_unknown_write_keys_get_401(
    gateway: GatewayProcess, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/events", content=dumps(event()), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]
    assert "test-key" not in gateway.log()


BOMB = gzip.compress(b"[" + b" " * 10_000_000 + b"]")


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "message"),
    [
        ("/v1/events", b"{not json", {}, 400, "not valid JSON"),
        ("/v1/events", b"", {}, 400, "not valid JSON"),
        ("/v1/batch", b'[{"a": 1}]', {}, 400, "not a batch"),
        ("/v1/batch", b'{"events": [], "extra": 1}', {}, 400, "not a batch"),
        ("/v1/events", dumps(event(properties={"k": "x" * 1900})) + b" " * 200, {}, 413, "event"),
        ("/v1/batch", b'{"events": [' + b" " * 20_000 + b"]}", {}, 413, "16384-byte"),
        ("/v1/batch", dumps({"events": [event() for _ in range(21)]}), {}, 413, "20-event"),
        ("/v1/events", b"{}", {"content-type": "application/xml"}, 415, "application/xml"),
        ("/v1/events", b"{}", {"content-type": "multipart/form-data"}, 415, "content type"),
        ("/v1/events", b"{}", {"content-encoding": "br"}, 415, "Content-Encoding"),
        ("/v1/events", BOMB, {"content-encoding": "gzip"}, 413, "decompressed"),
        ("/v1/events", gzip.compress(b"{}")[:-9], {"content-encoding": "gzip"}, 400, "truncated"),
        ("/v1/events", b"\x1f\x8b\x08garbage!", {"content-encoding": "gzip"}, 400, "gzip"),
        ("/v1/events", b"{}", {"content-encoding": "gzip"}, 400, "gzip"),
    ],
    ids=[
        "unparseable",
        "empty",
        "batch-not-object",
        "batch-unknown-field",
        "event-too-big",
        "request-too-big",
        "too-many-events",
        "xml",
        "form",
        "brotli",
        "gzip-bomb",
        "gzip-truncated",
        "gzip-corrupt",
        "gzip-not-gzip",
    ],
)
async def test_error_statuses(
    client: httpx.AsyncClient,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = await client.post(
        path, content=content, headers={**BEARER, "content-type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


async def test_oversized_event_inside_a_batch_is_refused_alone(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    small = dumps(event())
    big = dumps(event(properties={"k": "x" * 1000, "j": "y" * 1000}))
    response = await client.post(
        "/v1/batch", content=b'{"events":[' + small + b"," + big + b"]}", headers=BEARER
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    assert "2048-byte limit" in response.json()["rejected"][0]["error"]
    assert published_events(
        await pull(gateway.settings, gateway.settings.events_subscription, events=1)
    ) == [small]
    assert published_events(
        await pull(gateway.settings, gateway.settings.bad_events_subscription, events=1)
    ) == [big]


async def test_gzip_bodies_are_accepted(gateway: GatewayProcess, client: httpx.AsyncClient) -> None:
    events = [dumps(event()) for _ in range(5)]
    body = gzip.compress(b'{"events":[' + b",".join(events) + b"]}")
    response = await client.post(
        "/v1/batch",
        content=body,
        headers={**BEARER, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 5, "rejected": []}
    pulled = await pull(gateway.settings, gateway.settings.events_subscription, events=5)
    assert sorted(published_events(pulled)) == sorted(events)


async def test_beacon_text_plain_with_key_in_query(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    raw = dumps(event())
    # What navigator.sendBeacon(url, string) sends: text/plain, no custom headers, no preflight.
    response = await client.post(
        "/v1/events?writeKey=test-key",
        content=raw,
        headers={"content-type": "text/plain;charset=UTF-8", "origin": "https://elsewhere.org"},
    )
    assert response.status_code == 202
    assert "access-control-allow-origin" not in response.headers
    pulled = await pull(gateway.settings, gateway.settings.events_subscription, events=1)
    assert published_events(pulled) == [raw]


async def test_cors_preflight_and_response_headers(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    preflight = await client.options(
        "/v1/batch",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"]
    assert "authorization" in allowed and "content-type" in allowed
    refused = await client.options(
        "/v1/batch",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers

    raw = dumps(event())
    response = await client.post("/v1/events", content=raw, headers={**BEARER, "origin": ORIGIN})
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == ORIGIN
    unauthorized = await client.post("/v1/events", content=raw, headers={"origin": ORIGIN})
    assert unauthorized.status_code == 401
    # The browser must be able to read the error too.
    assert unauthorized.headers["access-control-allow-origin"] == ORIGIN
    await pull(gateway.settings, gateway.settings.events_subscription, events=1)


async def test_wrong_method_and_unknown_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/events", headers=BEARER)
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert (await client.get("/nope")).status_code == 404


async def test_health_readiness_metrics_and_openapi(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    for path in ("/health", "/healthz"):
        assert (await client.get(path)).text == "ok"
    for path in ("/ready", "/readyz"):
        assert (await client.get(path)).text == "ready"

    await client.post("/v1/events", content=b"{broken", headers=BEARER)
    raw = dumps(event())
    assert (await client.post("/v1/events", content=raw, headers=BEARER)).status_code == 202
    await pull(gateway.settings, gateway.settings.events_subscription, events=1)
    text = (await client.get("/metrics")).text
    assert 'gateway_requests_total{route="/v1/events",status="400"}' in text
    assert 'gateway_requests_total{route="/v1/events",status="202"}' in text
    assert 'gateway_events_total{outcome="accepted"}' in text
    assert 'gateway_publish_batch_events_count{kind="events"}' in text
    assert "gateway_publish_seconds_bucket" in text
    assert "gateway_publish_queue_bytes" in text

    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert {"/v1/events", "/v1/batch", "/health", "/ready", "/metrics"} <= set(document["paths"])
    responses = document["paths"]["/v1/batch"]["post"]["responses"]
    assert {"202", "400", "401", "413", "415", "429", "503"} <= set(responses)
    event_schema = document["components"]["schemas"]["Event"]
    assert {"event_id", "event_type", "occurred_at"} <= set(event_schema["required"])
    assert "2048 bytes per event" in responses["413"]["description"]


def test_module_log_never_shows_a_write_key(gateway: GatewayProcess) -> None:
    log = gateway.log()
    for key in ("test-key", "other-key", "rotated-key"):
        assert key not in log


async def test_serves_the_browser_tracker_to_any_origin(client: httpx.AsyncClient) -> None:
    response = await client.get(TRACKER_PATH, headers={"origin": "https://shop.example"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.content == tracker_script()
    assert b"export function init" in response.content
