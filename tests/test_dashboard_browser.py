"""The dashboard in headless Chromium (Debian's binary, driven by Playwright) against a real
`clickstream dashboard` server and a seeded PostgreSQL database. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from browser_testing import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from dashboard_testing import (
    PASSWORD,
    DashboardProcess,
    dashboard_server,
    drop_database,
    migrated_database,
)

from dashboard.seed import seed_database
from processor.postgres import PostgresSink, create_sink_pool
from processor.records import EnrichedEvent

pytestmark = [
    pytest.mark.browser,
    requires_chromium,
]
playwright_sync = pytest.importorskip("playwright.sync_api")
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
T = TypeVar("T")


def in_thread(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a thread of its own: Playwright's sync API owns this
    thread's event loop while a browser is open."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result()


@pytest.fixture(scope="module")
def seeded_url(database_url: str) -> Iterator[str]:
    url = in_thread(lambda: migrated_database(database_url))
    in_thread(lambda: seed_database(url, events=20_000, days=30))
    yield url
    in_thread(lambda: drop_database(database_url, url))


@pytest.fixture(scope="module")
def server(seeded_url: str) -> Iterator[DashboardProcess]:
    with dashboard_server(seeded_url) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: DashboardProcess) -> Iterator[Any]:
    """A signed-in page; fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=server.url)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("dialog", lambda dialog: errors.append(f"dialog opened: {dialog.message}"))
    tab.goto(f"{server.url}/login")
    tab.fill("#password", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{server.url}/")
    yield tab
    context.close()
    assert errors == []


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def api(page: Any, path: str) -> dict[str, Any]:
    response = page.request.get(path)  # shares the page's session cookie
    assert response.ok
    data: dict[str, Any] = response.json()
    return data


def kpi_text(page: Any, name: str) -> str:
    return str(page.locator(f'[data-kpi="{name}"] .value').inner_text())


def test_login_is_required(browser: Any, server: DashboardProcess) -> None:
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{server.url}/bad-events?range=7d")
    assert tab.url.startswith(f"{server.url}/login?next=")
    tab.fill("#password", "not the password")
    tab.click("button[type=submit]")
    assert "Wrong password" in tab.locator(".error").inner_text()
    tab.goto(f"{server.url}/login?next=%2Fbad-events%3Frange%3D7d")
    tab.fill("#password", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{server.url}/bad-events?range=7d")
    context.close()


def test_overview_renders_charts_from_the_database(page: Any, server: DashboardProcess) -> None:
    page.goto(f"{server.url}/?range=30d")
    page.wait_for_selector("body[data-loaded=true]")
    expected = api(page, "/api/kpis?range=30d")["kpis"]
    assert kpi_text(page, "events") == f"{expected['events']['value']:,}"
    assert kpi_text(page, "orders") == f"{expected['orders']['value']:,}"
    assert page.locator('#chart-events polyline[data-series="page_view"]').count() == 1
    assert page.locator("#chart-revenue polyline").count() == 1
    assert page.locator("#chart-funnel .bar").count() == 4
    assert page.locator("#chart-products-views .bar").count() == 10
    assert page.locator("#chart-devices .bar").count() == 3
    assert page.locator("#chart-events svg .axis text").count() > 5  # labelled axes
    tooltip = page.locator("#chart-events .hover title").first.text_content()
    assert "UTC" in tooltip and "page_view:" in tooltip
    assert page.locator("#empty-state").is_hidden()
    shot(page, "overview")


def test_range_change_updates_url_and_numbers(page: Any, server: DashboardProcess) -> None:
    page.goto(f"{server.url}/?range=30d")
    page.wait_for_selector("body[data-loaded=true]")
    month = kpi_text(page, "events")
    page.select_option("#range-select", "24h")
    page.wait_for_url(re.compile(r"\?range=24h$"))
    day = api(page, "/api/kpis?range=24h")["kpis"]["events"]["value"]
    page.wait_for_function(
        "expected => document.querySelector('[data-kpi=events] .value').textContent === expected",
        arg=f"{day:,}",
    )
    assert f"{day:,}" != month
    assert (
        page.locator("header nav a", has_text="Customers")
        .get_attribute("href")
        .endswith("range=24h")
    )
    page.go_back()
    page.wait_for_url(re.compile(r"\?range=30d$"))
    page.wait_for_function(
        "expected => document.querySelector('[data-kpi=events] .value').textContent === expected",
        arg=month,
    )


def write_event(database_url: str, event_type: str) -> None:
    """One event through the processor's own PostgreSQL sink, as a live event would arrive."""

    async def write() -> None:
        pool = await create_sink_pool(database_url)
        try:
            now = datetime.now(UTC)
            event = EnrichedEvent(
                event_id=uuid.uuid4(),
                event_type=event_type,
                occurred_at=now,
                received_at=now,
                source="web",
                visitor_key="live-visitor@example.com",
                anonymous_id="a-live",
                user_id="live-visitor@example.com",
                session_id="",
                device_type="desktop",
            )
            assert await PostgresSink(pool).write([event], []) == 1
        finally:
            await pool.close()

    in_thread(write)


def test_new_event_appears_without_reload(
    page: Any, server: DashboardProcess, seeded_url: str
) -> None:
    page.goto(f"{server.url}/?range=15m")
    page.wait_for_selector("body[data-loaded=true]")
    page.evaluate("window.__sameDocument = true")
    before = int(kpi_text(page, "events").replace(",", ""))
    write_event(seeded_url, "page_view")
    page.wait_for_function(
        "expected => document.querySelector('[data-kpi=events] .value').textContent === expected",
        arg=f"{before + 1:,}",
        timeout=15_000,
    )
    assert page.evaluate("window.__sameDocument") is True  # no reload happened


def test_customer_search_and_profile(page: Any, server: DashboardProcess) -> None:
    page.goto(f"{server.url}/customers")
    page.fill("#customer-q", "user1")
    page.click("form.search button")
    page.wait_for_url(re.compile(r"/customers\?q=user1$"))
    first = page.locator("#customer-results tbody a").first
    key = first.inner_text()
    assert key.startswith("user1")
    first.click()
    page.wait_for_selector("#profile")
    assert page.locator("#profile h1").inner_text().startswith(key)
    profile = api(page, f"/api/customers/{key}")
    assert page.locator('[data-field="sessions"]').inner_text() == str(
        profile["customer"]["sessions"]
    )
    assert page.locator("#timeline li").count() == len(profile["timeline"]) > 0
    shot(page, "customer")


def test_bad_events_page_shows_payloads_as_text(page: Any, server: DashboardProcess) -> None:
    page.goto(f"{server.url}/bad-events?range=30d")
    page.wait_for_selector("body[data-loaded=true]")
    data = api(page, "/api/bad-events?range=30d")
    assert data["total"] > 0
    assert page.locator("#bad-samples tbody tr").count() == len(data["samples"])
    assert page.locator("#chart-bad polyline").count() == len(data["counts"])
    scripted = page.locator("#bad-samples pre", has_text="<script>alert(1)</script>")
    assert scripted.count() > 0  # shown as text; a dialog would have failed the test
    assert page.locator("#bad-samples script").count() == 0
    shot(page, "bad-events")
