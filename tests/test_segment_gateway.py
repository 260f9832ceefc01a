"""analytics.js's routes over HTTP against a real gateway (Granian, Pub/Sub emulator): the write
key read from the body on those routes only, guessing keys in the body still limited per client
address, and the CORS preflight analytics.js needs. The browser itself: test_segment_sdks.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from gateway_server import GatewayProcess, published_events, pull, running_gateway

ORIGIN = "http://shop.example.com"
TEXT = {"content-type": "text/plain"}  # what analytics.js sends: no preflight without auth
pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag")


@pytest.fixture(scope="module")
def gateway(
    pubsub_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = {
        "CLICKSTREAM_CORS_ORIGINS": ORIGIN,
        "CLICKSTREAM_GATEWAY_AUTH_MAX_FAILURES": "3",
        # Loopback is the proxy here, so each "client" is told apart by X-Forwarded-For.
        "CLICKSTREAM_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    project = f"test-segw-{uuid.uuid4().hex[:8]}"
    with running_gateway(
        pubsub_emulator_host, project, tmp_path_factory.mktemp("segment-gateway"), env
    ) as gw:
        yield gw


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


def message(write_key: str | None, **fields: Any) -> dict[str, Any]:
    """A message as analytics.js posts it: the write key is a field of the body."""
    body: dict[str, Any] = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-browser",
        "messageId": f"ajs-next-{uuid.uuid4().hex}",
        "properties": {"product_id": "p-1", "price": 12.5},
        **fields,
    }
    if write_key is not None:
        body["writeKey"] = write_key
    return body


def text(value: object) -> bytes:
    return json.dumps(value).encode()


async def test_the_key_in_the_body_authenticates_analytics_js_routes(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    # other-key belongs to source "backend": the body's key decided the source.
    single = await client.post("/v1/t", content=text(message("other-key")), headers=TEXT)
    assert single.status_code == 200, single.text
    assert single.json() == {"success": True, "accepted": 1, "rejected": []}
    batch = {
        "writeKey": "other-key",
        "batch": [message(None), message(None, type="page", properties={"url": "https://s/"})],
        "sentAt": "2026-03-02T10:00:00Z",
    }
    batched = await client.post("/v1/b", content=text(batch), headers=TEXT)
    assert batched.status_code == 200, batched.text
    assert batched.json()["accepted"] == 2
    pulled = await pull(gateway.settings, gateway.settings.events_subscription, events=3)
    assert {group.source for p in pulled for group in p.envelope.groups} == {"backend"}
    types = sorted(json.loads(raw)["event_type"] for raw in published_events(pulled))
    assert types == ["page_view", "product_view", "product_view"]


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/t", message(None), "writeKey in the body"),  # no key anywhere
        ("/v1/p", message("not-a-key"), "unknown write key"),
        # Segment's server routes take the key from headers only: their body is not read first.
        ("/v1/track", message("test-key"), "missing write key"),
    ],
    ids=["missing", "unknown", "server-route"],
)
async def test_without_a_good_key_analytics_js_routes_answer_401(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], says: str
) -> None:
    # Each from its own address, so these failures block no other test.
    headers = {**TEXT, "x-forwarded-for": f"198.51.100.{uuid.uuid4().int % 200 + 10}"}
    response = await client.post(path, content=text(body), headers=headers)
    assert response.status_code == 401
    assert says in response.json()["error"]


async def test_wrong_keys_in_the_body_block_the_address(
    gateway: GatewayProcess, client: httpx.AsyncClient
) -> None:
    async def post(key: str, client_ip: str) -> httpx.Response:
        headers = {**TEXT, "x-forwarded-for": client_ip}
        return await client.post("/v1/t", content=text(message(key)), headers=headers)

    guesser, other = "203.0.113.7", "203.0.113.8"
    assert [(await post(f"guess-{i}", guesser)).status_code for i in range(3)] == [401] * 3
    blocked = await post("test-key", guesser)  # even the right key, or a good guess would show
    assert blocked.status_code == 429
    assert "too many failed authentications" in blocked.json()["error"]
    assert int(blocked.headers["retry-after"]) > 0
    assert (await post("test-key", other)).status_code == 200
    await pull(gateway.settings, gateway.settings.events_subscription, events=1)
    assert "guess-" not in gateway.log()


async def test_cors_lets_the_shop_send_and_retry(client: httpx.AsyncClient) -> None:
    # Newer analytics.js adds Authorization (so the browser asks first) and, on a retry,
    # X-Retry-Count: a preflight refusing it would lose every retried event.
    preflight = await client.options(
        "/v1/t",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-retry-count",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    refused = await client.post(
        "/v1/t", content=text(message("nope")), headers={**TEXT, "origin": ORIGIN}
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the page can read why
