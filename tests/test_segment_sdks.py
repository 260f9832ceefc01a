"""Segment's own SDKs, unmodified, pointed at the gateway: events reach PostgreSQL.

Each test runs the real stack: `clickstream gateway` under Granian and `clickstream processor`
against the Pub/Sub emulator and a fresh PostgreSQL database. The SDKs are configured with the
host and write key only: analytics-python in-process, analytics-node from Node, and analytics.js
(`@segment/analytics-next`'s browser bundle) in headless Chromium on a page served from loopback
(the npm packages are skipped with the reason when npm cannot install them).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from browser_testing import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from gateway_server import GatewayProcess, running_gateway
from gateway_testing import serving_pages
from processor_testing import (
    COUNTED_EVENTS,
    TIMELINE,
    aggregate_mismatches,
    start_worker,
    stop_worker,
    wait_for,
)
from segment.analytics import Client

from clickstream_contract.config import Settings
from processor.migrations import migrate

NODE_DIR = Path(__file__).parent / "node"
WRITE_KEY = "test-key"  # a key of tests/gateway_server.WRITE_KEYS, source "web"
pytestmark = pytest.mark.slow


@dataclass
class Stack:
    gateway: GatewayProcess
    database_url: str


@contextlib.contextmanager
def running_stack(
    emulator_host: str,
    project: str,
    database_url: str,
    log_dir: Path,
    gateway_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    with running_gateway(emulator_host, project, log_dir, gateway_env) as gateway:
        settings = Settings(
            project=project, pubsub_emulator_host=emulator_host, database_url=database_url
        )
        worker = start_worker(settings, log_dir / "worker.log")
        try:
            yield Stack(gateway, database_url)
        finally:
            stop_worker(worker)


@pytest.fixture
async def stack(
    pubsub_emulator_host: str, pubsub_project: str, fresh_database_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    await migrate(fresh_database_url)  # as `clickstream db migrate` does before a deployment
    with running_stack(pubsub_emulator_host, pubsub_project, fresh_database_url, tmp_path) as s:
        yield s


def shop_session(anonymous_id: str, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A visitor browses, buys anonymously, signs in and buys again: Segment calls as
    (method, keyword arguments in analytics-python's names)."""
    anon = {"anonymous_id": anonymous_id}
    user = {"user_id": user_id}
    mug = {"product_id": "p-1", "sku": "MUG-1", "name": "Mug", "category": "Kitchen"}
    return [
        ("page", {**anon, "name": "Home", "properties": {"url": "https://shop.example.com/"}}),
        ("track", {**anon, "event": "Products Searched", "properties": {"query": "mug"}}),
        ("track", {**anon, "event": "Product Viewed", "properties": {**mug, "price": 12.5}}),
        (
            "track",
            {**anon, "event": "Product Added", "properties": {**mug, "price": 12.5, "quantity": 2}},
        ),
        ("track", {**anon, "event": "Product Removed", "properties": {**mug, "quantity": 1}}),
        (
            "track",
            {
                **anon,
                "event": "Checkout Started",
                "properties": {"products": [{**mug, "price": 12.5, "quantity": 1}]},
            },
        ),
        (
            "track",
            {
                **anon,
                "event": "Order Completed",
                "properties": {
                    "order_id": "o-1",
                    "revenue": 12.5,
                    "currency": "EUR",
                    "products": [{**mug, "price": 12.5, "quantity": 1}],
                },
            },
        ),
        ("identify", {**anon, **user, "traits": {"email": f"{user_id}@example.com"}}),
        (
            "track",
            {
                **user,
                "event": "Order Completed",
                "properties": {
                    "order_id": "o-2",
                    "total": 30,
                    "currency": "EUR",
                    "products": [{"product_id": "p-2", "price": 15, "quantity": 2}],
                },
            },
        ),
        (
            "track",
            {**user, "event": "Newsletter Signed Up", "properties": {"topics": ["tea", "mugs"]}},
        ),
        ("screen", {**user, "name": "Cart"}),
        ("group", {**user, "group_id": "g-1", "traits": {"name": "Acme"}}),
    ]


EXPECTED_TYPES = [
    "add_to_cart",
    "begin_checkout",
    "group",
    "identify",
    "newsletter_signed_up",
    "page_view",
    "page_view",
    "product_view",
    "purchase",
    "purchase",
    "remove_from_cart",
    "search",
]


async def check_shop_session(database_url: str, anonymous_id: str, user_id: str) -> None:
    await wait_for(database_url, COUNTED_EVENTS, len(EXPECTED_TYPES))
    conn = await asyncpg.connect(database_url)
    try:
        types = await conn.fetch(f"SELECT event_type FROM {TIMELINE} ORDER BY 1")
        assert [row["event_type"] for row in types] == EXPECTED_TYPES
        assert await conn.fetchval("SELECT count(*) FROM bad_events") == 0
        viewed = await conn.fetchrow(
            f"SELECT product_id, product_name, price, anonymous_id FROM {TIMELINE}"
            " WHERE event_type = 'product_view'"
        )
        assert viewed is not None
        assert tuple(viewed) == ("p-1", "Mug", 12.5, anonymous_id)
        assert (
            await conn.fetchval(
                "SELECT category FROM product_metrics_hour WHERE product_id = 'p-1'"
            )
            == "Kitchen"
        )
        assert (
            await conn.fetchval(f"SELECT quantity FROM {TIMELINE} WHERE event_type = 'add_to_cart'")
            == 2
        )
        orders = await conn.fetch(
            f"SELECT order_id, revenue FROM {TIMELINE} WHERE event_type = 'purchase'"
            " ORDER BY order_id"
        )
        assert [(r["order_id"], r["revenue"]) for r in orders] == [("o-1", 12.5), ("o-2", 30.0)]
        # The identify linked the device to the user and merged the anonymous profile.
        assert (
            await conn.fetchval(
                "SELECT user_id FROM identities WHERE anonymous_id = $1", anonymous_id
            )
            == user_id
        )
        [profile] = await conn.fetch("SELECT * FROM customers")
        assert profile["visitor_key"] == user_id
        assert profile["anonymous_ids"] == [anonymous_id]
        assert (profile["events"], profile["orders"]) == (len(EXPECTED_TYPES), 2)
        assert float(profile["lifetime_value"]) == 42.5
        units = await conn.fetch(
            "SELECT product_id, sum(units), sum(revenue) FROM product_metrics_hour GROUP BY 1"
            " ORDER BY 1"
        )
        assert [(r[0], r[1], float(r[2])) for r in units] == [("p-1", 1, 12.5), ("p-2", 2, 30.0)]
        assert await aggregate_mismatches(conn) == {}
    finally:
        await conn.close()


async def test_analytics_python_events_reach_postgres(stack: Stack) -> None:
    errors: list[str] = []
    # The one-line switch: host (and the write key); on_error only lets the test see failures.
    client = Client(
        WRITE_KEY,
        host=stack.gateway.url,
        on_error=lambda error, batch: errors.append(str(error)),
    )
    for method, params in shop_session("anon-py", "user-py"):
        getattr(client, method)(**params)
    client.flush()
    client.shutdown()
    assert errors == []
    await check_shop_session(stack.database_url, "anon-py", "user-py")


def camel(params: dict[str, Any]) -> dict[str, Any]:
    """analytics-python keyword arguments -> analytics-node's camelCase parameters."""
    names = {"anonymous_id": "anonymousId", "user_id": "userId", "group_id": "groupId"}
    return {names.get(key, key): value for key, value in params.items()}


def node_package(name: str) -> Path:
    """tests/node/node_modules/NAME, installed with npm (gitignored) if needed, or skip saying
    why."""
    installed = NODE_DIR / "node_modules" / name
    if installed.is_dir():
        return installed
    if shutil.which("npm") is None:
        pytest.skip(f"npm is not installed, so {name} cannot be")
    try:
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=180,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"npm could not install {name}: {output.decode()[-500:]}")
    return installed


def run_node(calls: list[tuple[str, dict[str, Any]]], host: str) -> None:
    result = subprocess.run(
        ["node", str(NODE_DIR / "send.mjs")],
        input=json.dumps(calls).encode(),
        env={**os.environ, "SEGMENT_HOST": host, "SEGMENT_WRITE_KEY": WRITE_KEY},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()


async def test_analytics_node_events_reach_postgres(stack: Stack) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    node_package("@segment/analytics-node")
    calls = [(method, camel(params)) for method, params in shop_session("anon-js", "user-js")]
    run_node(calls, stack.gateway.url)
    await check_shop_session(stack.database_url, "anon-js", "user-js")


def segment_batch(sent_at: datetime) -> dict[str, Any]:
    now = datetime.now(UTC)
    orders = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "retry-user",
            "messageId": f"order-{n}",  # not UUIDs: Segment's SDKs may send any string
            "timestamp": (now - timedelta(seconds=n)).isoformat(),
            "properties": {"order_id": f"o-{n}", "revenue": 10 * n, "currency": "EUR"},
        }
        for n in (1, 2, 3)
    ]
    broken = {"type": "track", "userId": "retry-user", "messageId": "broken"}  # no `event`
    return {"batch": [*orders, broken], "sentAt": sent_at.isoformat()}


async def test_a_retried_batch_counts_once_and_rejections_are_kept(stack: Stack) -> None:
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    headers = {
        "authorization": f"Basic {basic}",
        "content-type": "application/json",
        "content-encoding": "gzip",
    }
    async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=30) as client:
        # analytics-python re-sends a batch after a lost response with a new sentAt.
        for attempt in range(2):
            sent = datetime.now(UTC) + timedelta(seconds=attempt)
            data = gzip.compress(json.dumps(segment_batch(sent)).encode())
            response = await client.post("/v1/batch", content=data, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["success"] is True and body["accepted"] == 3
            [rejection] = body["rejected"]
            assert rejection["index"] == 3 and "`event` is required" in rejection["error"]
        wrong = await client.post(
            "/v1/track",
            content=b"{}",
            headers={"authorization": "Basic " + base64.b64encode(b"nope:").decode()},
        )
        assert wrong.status_code == 401

    await wait_for(stack.database_url, "SELECT count(*) FROM bad_events", 2)
    await wait_for(stack.database_url, COUNTED_EVENTS, 3)
    conn = await asyncpg.connect(stack.database_url)
    try:
        assert float(await conn.fetchval("SELECT sum(revenue) FROM metrics_minute")) == 60.0
        [customer] = await conn.fetch("SELECT orders, lifetime_value FROM customers")
        assert (customer["orders"], float(customer["lifetime_value"])) == (3, 60.0)
        raws = await conn.fetch("SELECT raw, reason FROM bad_events")
        for row in raws:  # each attempt's refused message, as sent, with the reason
            assert json.loads(row["raw"])["messageId"] == "broken"
            assert "`event` is required" in row["reason"]
        assert await aggregate_mismatches(conn) == {}
    finally:
        await conn.close()


# analytics.js: the shop's page loads analytics-next's browser bundle with a script tag and
# gives its settings inline (`cdnSettings`, so Segment's CDN is never asked), with Segment.io
# pointed at the gateway: the one change a shop makes. `window.shop` is the AnalyticsBrowser.
def shop_page(api_host: str, batching: bool) -> bytes:
    # Batching delivery posts to <apiHost>/b; here after 3 calls, or 100 ms.
    batches = ', deliveryStrategy: { strategy: "batching", config: { size: 3, timeout: 100 } }'
    return f"""<!doctype html>
<html><head><title>Mug | Example Shop</title>
<script src="/analytics-next.js"></script>
<script>
  window.shop = AnalyticsNext.AnalyticsBrowser.load(
    {{ writeKey: "{WRITE_KEY}",
       cdnSettings: {{ integrations: {{ "Segment.io": {{ apiKey: "{WRITE_KEY}" }} }} }} }},
    {{ integrations: {{ "Segment.io": {{
         apiHost: "{api_host}", protocol: "http"{batches if batching else ""} }} }} }},
  );
</script></head><body><h1>Mug</h1></body></html>
""".encode()


BROWSE_AND_SIGN_IN = """async (mug) => {
  await window.shop.page();
  await window.shop.track("Product Viewed", mug);
  await window.shop.identify("user-browser", { email: "user-browser@example.com" });
  const [analytics] = await window.shop;
  return analytics.user().anonymousId();
}"""
MUG = {"product_id": "p-1", "sku": "MUG-1", "name": "Mug", "category": "Kitchen", "price": 12.5}


@pytest.mark.browser
@requires_chromium
@pytest.mark.parametrize(
    ("package", "basic_auth", "batching"),
    [
        # The latest sends the write key both in the body and as the Basic username.
        ("@segment/analytics-next", True, False),
        ("@segment/analytics-next", True, True),
        # analytics-next 1.81.0 (npm alias in tests/node/package.json) sends it in the body only.
        ("analytics-next-key-in-body", False, False),
    ],
    ids=["latest", "latest-batching", "key-in-body"],
)
async def test_analytics_js_in_a_browser_events_reach_postgres(
    pubsub_emulator_host: str,
    pubsub_project: str,
    fresh_database_url: str,
    tmp_path: Path,
    package: str,
    basic_auth: bool,
    batching: bool,
) -> None:
    from playwright.async_api import Request, Route, async_playwright

    await migrate(fresh_database_url)
    bundle = node_package(package) / "dist" / "umd" / "index.js"
    pages = {"/analytics-next.js": ("text/javascript", bundle.read_bytes())}
    with serving_pages(pages) as shop:
        # The shop's origin must be allowed to call the gateway from its pages.
        env = {"CLICKSTREAM_CORS_ORIGINS": shop.url}
        with running_stack(
            pubsub_emulator_host, pubsub_project, fresh_database_url, tmp_path, env
        ) as stack:
            api_host = stack.gateway.url.removeprefix("http://") + "/v1"
            shop.pages["/mug"] = ("text/html", shop_page(api_host, batching))
            outside: list[str] = []  # anything but loopback (Segment's CDN or API) is refused
            posted: list[Request] = []

            async def loopback_only(route: Route) -> None:
                if urlsplit(route.request.url).hostname == "127.0.0.1":
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    await page.route("**/*", loopback_only)
                    page.on("request", lambda r: r.method == "POST" and posted.append(r))
                    await page.goto(f"{shop.url}/mug")
                    anonymous_id = await page.evaluate(BROWSE_AND_SIGN_IN, MUG)
                    await wait_for(stack.database_url, COUNTED_EVENTS, 3)
                finally:
                    await browser.close()
    assert outside == []
    paths = sorted(urlsplit(r.url).path for r in posted)
    assert paths == (["/v1/b"] * len(posted) if batching else ["/v1/i", "/v1/p", "/v1/t"])
    assert {r.post_data_json["writeKey"] for r in posted} == {WRITE_KEY}
    assert {"authorization" in r.headers for r in posted} == {basic_auth}
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_type, anonymous_id, visitor_key, page_path, page_title, product_id,"
            f" product_name, price FROM {TIMELINE} ORDER BY event_type"
        )
        assert [r["event_type"] for r in rows] == ["identify", "page_view", "product_view"]
        assert {(r["anonymous_id"], r["visitor_key"]) for r in rows} == {
            (anonymous_id, "user-browser")
        }
        _, page_view, product_view = rows
        assert (page_view["page_path"], page_view["page_title"]) == ("/mug", "Mug | Example Shop")
        assert tuple(product_view[k] for k in ("product_id", "product_name", "price")) == (
            "p-1",
            "Mug",
            12.5,
        )
        assert await conn.fetchval("SELECT count(*) FROM bad_events") == 0
        # The identify linked the browser's anonymous id to the user and merged its profile.
        assert (
            await conn.fetchval(
                "SELECT user_id FROM identities WHERE anonymous_id = $1", anonymous_id
            )
            == "user-browser"
        )
        [profile] = await conn.fetch("SELECT visitor_key, events FROM customers")
        assert (profile["visitor_key"], profile["events"]) == ("user-browser", 3)
        assert await aggregate_mismatches(conn) == {}
    finally:
        await conn.close()
