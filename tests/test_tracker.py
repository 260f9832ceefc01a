"""The browser tracker in headless Chromium (Playwright, Debian's chromium binary).

A shop's page served from loopback loads the tracker from the gateway, cross-origin, the way a
shop would; the real gateway (tests/gateway_testing.py) publishes what reaches it: the
automatic page view, e-commerce helpers sent with fetch (JSON + Authorization, after a CORS
preflight), and the beacon (text/plain + ?writeKey=) that drains the queue when the page goes
away.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browser_testing import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from gateway_testing import Exchange, LocalGateway, Shop, serving, serving_pages

from gateway.settings import GatewaySettings
from gateway.tracker import TRACKER_PATH


def shop_page(gateway_url: str) -> bytes:
    return f"""<!doctype html>
<html><head><title>Trail shoes | Example Shop</title>
<script type="module">
  import {{ init }} from "{gateway_url}{TRACKER_PATH}";
  // A long flush interval: the test decides when fetch sends, so the beacon has work left.
  window.cs = init({{ writeKey: "test-key", endpoint: "{gateway_url}",
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
async def shop() -> AsyncIterator[tuple[Shop, LocalGateway, Any]]:
    from playwright.async_api import async_playwright

    # The shop's pages may call the gateway from their origin.
    with (
        serving_pages({}) as shop,
        serving(GatewaySettings(cors_origins=(shop.url,))) as gateway,
    ):
        page = shop_page(gateway.url)
        shop.pages.update({"/shop": ("text/html", page), "/checkout": ("text/html", page)})
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield shop, gateway, await browser.new_page()
            finally:
                await browser.close()


async def wait_for(gateway: LocalGateway, count: int) -> list[tuple[Exchange, list[Any]]]:
    """The first `count` ingest requests, each with the events the gateway published for it
    (the test sends one request at a time, so the n-th group published is the n-th's)."""
    for _ in range(100):
        requests = gateway.ingest_requests()[:count]
        groups = gateway.transport.groups()[:count]
        if len(requests) == len(groups) == count:
            return [
                (request, [json.loads(e) for e in group.events])
                for request, group in zip(requests, groups, strict=True)
            ]
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} requests, got {gateway.ingest_requests()}")


async def test_page_view_helpers_and_beacon_reach_the_gateway(
    shop: tuple[Shop, LocalGateway, Any],
) -> None:
    site, gateway, page = shop
    await page.goto(
        f"{site.url}/shop?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale"
    )
    await page.wait_for_function("window.cs !== undefined")
    await page.evaluate("window.cs.flush()")
    [(landing, [view])] = await wait_for(gateway, 1)
    assert landing.status == 202
    assert landing.headers["authorization"] == "Bearer test-key"
    assert landing.headers["content-type"] == "application/json"
    assert view["event_type"] == "page_view"
    assert view["page"]["url"].startswith(f"{site.url}/shop?")
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
    _, helpers = (await wait_for(gateway, 2))[1]
    assert [e["event_type"] for e in helpers] == ["product_view", "add_to_cart"]
    assert all(e["product"] == SHOE for e in helpers)
    assert {e["anonymous_id"] for e in helpers} == {view["anonymous_id"]}
    assert {e["session_id"] for e in helpers} == {view["session_id"]}

    # Queued, not yet sent: leaving the page must hand it to a beacon.
    await page.evaluate("window.cs.track('wishlist_add', {product_id: 'P10001'})")
    await page.goto(f"{site.url}/checkout")
    beacon, [wish] = (await wait_for(gateway, 3))[2]
    assert beacon.status == 202
    assert beacon.query == {"writeKey": ["test-key"]}
    assert beacon.headers["content-type"].startswith("text/plain")
    assert "authorization" not in beacon.headers
    assert wish["event_type"] == "wishlist_add"
    assert wish["properties"] == {"product_id": "P10001"}

    # The next page keeps the anonymous id and the session (same browser, within 30 minutes).
    await page.wait_for_function("window.cs !== undefined")
    await page.evaluate("window.cs.flush()")
    _, [second] = (await wait_for(gateway, 4))[3]
    assert second["event_type"] == "page_view"
    assert (second["anonymous_id"], second["session_id"]) == (
        view["anonymous_id"],
        view["session_id"],
    )

    counts = gateway.transport.published_counts()
    assert len(counts) == 5 and max(counts.values()) == 1
    assert [group.source for group in gateway.transport.groups()] == ["web"] * 4


async def test_identify_links_the_visitor_and_later_events_carry_the_user(
    shop: tuple[Shop, LocalGateway, Any],
) -> None:
    site, gateway, page = shop
    await page.goto(f"{site.url}/shop")
    await page.wait_for_function("window.cs !== undefined")
    await page.evaluate(
        "(p) => { window.cs.identify('u-42', {plan: 'gold'}); window.cs.productView(p);"
        " return window.cs.flush(); }",
        SHOE,
    )
    [(_, [view, identify, product])] = await wait_for(gateway, 1)
    assert "user_id" not in view  # the automatic page view came before the sign-in
    assert identify["event_type"] == "identify"
    assert (identify["anonymous_id"], identify["user_id"]) == (view["anonymous_id"], "u-42")
    assert identify["properties"] == {"plan": "gold"}
    assert (product["anonymous_id"], product["user_id"]) == (view["anonymous_id"], "u-42")

    # The next page of the same browser still knows the user.
    await page.goto(f"{site.url}/checkout")
    await page.wait_for_function("window.cs !== undefined")
    await page.evaluate("window.cs.flush()")
    _, [second] = (await wait_for(gateway, 2))[1]
    assert (second["anonymous_id"], second["user_id"]) == (view["anonymous_id"], "u-42")
