"""The browser tracker in headless Chromium (Playwright, Debian's chromium binary).

A real page served from loopback includes the tracker the way a shop would; the gateway
double (tests/gateway_double.py) records what reaches it: the automatic page view, e-commerce
helpers sent with fetch (JSON + Authorization), and the beacon (text/plain + ?writeKey=) that
drains the queue when the page goes away.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browser_testing import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from gateway_double import GatewayDouble, Request, running

from gateway.tracker import TRACKER_CONTENT_TYPE, TRACKER_PATH, tracker_script

PAGE = f"""<!doctype html>
<html><head><title>Trail shoes | Example Shop</title>
<script type="module">
  import {{ init }} from "{TRACKER_PATH}";
  // A long flush interval: the test decides when fetch sends, so the beacon has work left.
  window.cs = init({{ writeKey: "test-key", endpoint: location.origin,
                     flushInterval: 60000, batchSize: 100 }});
</script></head><body><h1>Trail shoes</h1></body></html>
""".encode()
SHOE = {
    "product_id": "P10001",
    "name": "Trail shoe",
    "category": "Sports",
    "price": 89.5,
    "currency": "EUR",
}

pytestmark = [
    pytest.mark.browser,
    requires_chromium,
]


@pytest.fixture
async def shop() -> AsyncIterator[tuple[GatewayDouble, Any]]:
    from playwright.async_api import async_playwright

    pages = {
        "/shop": ("text/html", PAGE),
        "/checkout": ("text/html", PAGE),
        TRACKER_PATH: (TRACKER_CONTENT_TYPE, tracker_script()),
    }
    with running(GatewayDouble(pages=pages)) as double:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield double, await browser.new_page()
            finally:
                await browser.close()


async def wait_for(double: GatewayDouble, count: int) -> list[Request]:
    for _ in range(100):
        requests = double.ingest_requests()
        if len(requests) >= count:
            return requests
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} requests, got {double.ingest_requests()}")


async def test_page_view_helpers_and_beacon_reach_the_gateway(
    shop: tuple[GatewayDouble, Any],
) -> None:
    double, page = shop
    await page.goto(
        f"{double.url}/shop?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale"
    )
    await page.wait_for_function("window.cs !== undefined")
    await page.evaluate("window.cs.flush()")
    [landing] = await wait_for(double, 1)
    assert landing.headers["Authorization"] == "Bearer test-key"
    assert landing.headers["Content-Type"] == "application/json"
    [view] = landing.events
    assert view["event_type"] == "page_view"
    assert view["page"]["url"].startswith(f"{double.url}/shop?")
    assert view["page"]["title"] == "Trail shoes | Example Shop"
    assert view["context"]["campaign"] == {
        "source": "newsletter",
        "medium": "email",
        "name": "spring_sale",
    }
    assert "Chrome" in view["context"]["user_agent"]
    uuid.UUID(view["event_id"])

    await page.evaluate(
        "(p) => { window.cs.productView(p); window.cs.addToCart(p); return window.cs.flush(); }",
        SHOE,
    )
    helpers = (await wait_for(double, 2))[1]
    assert [e["event_type"] for e in helpers.events] == ["product_view", "add_to_cart"]
    assert all(e["product"] == SHOE for e in helpers.events)
    assert {e["anonymous_id"] for e in helpers.events} == {view["anonymous_id"]}
    assert {e["session_id"] for e in helpers.events} == {view["session_id"]}

    # Queued, not yet sent: leaving the page must hand it to a beacon.
    await page.evaluate("window.cs.track('wishlist_add', {product_id: 'P10001'})")
    await page.goto(f"{double.url}/checkout")
    beacon = (await wait_for(double, 3))[2]
    assert beacon.query == {"writeKey": ["test-key"]}
    assert beacon.headers["Content-Type"].startswith("text/plain")
    assert "Authorization" not in beacon.headers
    [wish] = beacon.events
    assert wish["event_type"] == "wishlist_add"
    assert wish["properties"] == {"product_id": "P10001"}

    # The next page keeps the anonymous id and the session (same browser, within 30 minutes).
    await page.wait_for_function("window.cs !== undefined")
    await page.evaluate("window.cs.flush()")
    second = (await wait_for(double, 4))[3].events[0]
    assert second["event_type"] == "page_view"
    assert (second["anonymous_id"], second["session_id"]) == (
        view["anonymous_id"],
        view["session_id"],
    )

    counts = double.accepted_counts()
    assert len(counts) == 5 and max(counts.values()) == 1
