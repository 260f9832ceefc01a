"""The dashboard in headless Chromium (Debian's binary, driven by Playwright) against a real
`clickstream dashboard` server and a seeded PostgreSQL database. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
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
    """30 days of seeded events that end an hour ago: the last 15 minutes hold only the
    events the tests write, and no seeded event leaves that window while a test counts them."""
    url = in_thread(lambda: migrated_database(database_url))
    seeded_until = datetime.now(UTC) - timedelta(hours=1)
    in_thread(lambda: seed_database(url, events=20_000, days=30, now=seeded_until))
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


@contextlib.contextmanager
def signed_in(
    browser: Any, server: DashboardProcess, width: int = 1400, height: int = 1000
) -> Iterator[Any]:
    """A signed-in page of a screen this size; fails the test on any script error."""
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=server.url)
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


@pytest.fixture
def page(browser: Any, server: DashboardProcess) -> Iterator[Any]:
    with signed_in(browser, server) as tab:
        yield tab


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
    assert page.locator('#chart-events g.series[data-series="page_view"]').count() == 1
    assert page.locator("#chart-revenue g.series").count() == 1
    assert page.locator("#chart-funnel .bar").count() == 4
    assert page.locator("#chart-products-views .bar").count() == 10
    assert page.locator("#chart-devices .bar").count() == 3
    assert page.locator("#chart-events svg .axis text").count() > 5  # labelled axes
    assert page.locator("#empty-state").is_hidden()
    shot(page, "overview")


def hover_bucket(page: Any, chart: str, index: int, count: int) -> Any:
    """Point at bucket `index` (of `count`) of a line chart; its hover box."""
    area = page.locator(f"{chart} .hover-area").bounding_box()
    page.mouse.move(area["x"] + area["width"] * index / (count - 1), area["y"] + 20)
    box = page.locator(f"{chart} .chart-tooltip")
    box.wait_for(state="visible")
    return box


def test_charts_show_every_series_on_hover_and_mark_partial_buckets(
    page: Any, server: DashboardProcess
) -> None:
    page.goto(f"{server.url}/?range=30d")
    page.wait_for_selector("body[data-loaded=true]")
    data = api(page, "/api/timeseries?range=30d")
    buckets, series = data["buckets"], data["events"]
    i = len(buckets) // 2
    box = hover_bucket(page, "#chart-events", i, len(buckets))
    assert datetime.fromisoformat(box.get_attribute("data-bucket")) == datetime.fromisoformat(
        buckets[i]
    )
    assert page.locator("#chart-events .crosshair").get_attribute("visibility") == "visible"
    assert page.locator("#chart-events svg title").count() == 0  # no native tooltip over it
    rows = box.locator("[data-series]")
    assert [row.get_attribute("data-series") for row in rows.all()] == list(series)
    expected = page.evaluate(
        "values => values.map((v) => new Intl.NumberFormat('en',"
        " { notation: 'compact', maximumFractionDigits: 1 }).format(v))",
        [values[i] for values in series.values()],
    )
    assert rows.locator("b").all_inner_texts() == expected
    assert "partial" not in box.locator("strong").inner_text()
    # The next poll redraws the chart under the still pointer: the box stays.
    status = page.locator("#live-status").inner_text()
    page.wait_for_function(
        "before => document.getElementById('live-status').textContent !== before", arg=status
    )
    assert box.is_visible() and box.get_attribute("data-bucket") is not None
    # The range cuts the first day, and today is still filling: both marked, neither a drop.
    bands = page.locator("#chart-events .partial-band").all()
    assert [band.get_attribute("data-bucket") for band in bands] == [buckets[0], buckets[-1]]
    dashed = page.locator('#chart-events g.series[data-series="page_view"] polyline.partial')
    assert dashed.count() == 2
    assert "partial bucket" in page.locator("#chart-events .legend").inner_text()
    last = hover_bucket(page, "#chart-events", len(buckets) - 1, len(buckets))
    assert last.locator("strong").inner_text().endswith("UTC · partial")
    page.mouse.move(0, 0)
    last.wait_for(state="hidden")


def test_funnel_notes_read_in_the_bars_words(page: Any, server: DashboardProcess) -> None:
    page.goto(f"{server.url}/?range=30d")
    page.wait_for_selector("body[data-loaded=true]")
    labels = page.locator("#chart-funnel .bar text.label").all_text_contents()
    assert labels == ["product view", "add to cart", "begin checkout", "purchase"]
    notes = page.locator("#chart-funnel .funnel-notes li").all_inner_texts()
    assert len(notes) == 3
    for note, before, step in zip(notes, labels[:-1], labels[1:], strict=True):
        assert re.fullmatch(rf"{before} → {step}: \d+\.\d%", note), note
    # A step after one no session reached has no rate, said in the same words.
    quiet = page.evaluate(
        """async () => (await import("/static/charts.js")).funnelNotes([
            { step: "product_view", rate_from_previous: null },
            { step: "add_to_cart", rate_from_previous: null },
            { step: "begin_checkout", rate_from_previous: 0 },
        ])"""
    )
    assert quiet == [
        "product view → add to cart: no rate (no product view)",
        "add to cart → begin checkout: 0.0%",
    ]


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


def write_event(database_url: str, event_type: str, **fields: Any) -> None:
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
                **fields,
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


def test_orders_without_an_exchange_rate_are_named_apart(
    page: Any, server: DashboardProcess, seeded_url: str
) -> None:
    """Revenue is in the reporting currency (EUR here); an order in a currency without a rate is
    not added to it but named under the key figures, in its own currency."""
    write_event(seeded_url, "purchase", order_id="O-CHF", revenue=42.0, currency="CHF")
    page.goto(f"{server.url}/?range=15m")
    page.wait_for_selector("body[data-loaded=true]")
    kpis = api(page, "/api/kpis?range=15m")
    assert kpis["unconverted"] == [{"currency": "CHF", "orders": 1, "revenue": 42.0}]
    note = page.locator("#unconverted-revenue")
    assert note.is_visible()
    assert re.search(r"1 order in CHF \(CHF\s42\.00\)", note.inner_text())
    revenue = kpis["kpis"]["revenue"]["value"]
    assert kpi_text(page, "revenue") == f"€{revenue:,.2f}"


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
    assert page.locator("#chart-bad g.series").count() == len(data["counts"])
    legend = page.locator("#chart-bad .legend li:not(.partial-key)").all_inner_texts()
    assert legend == list(data["counts"])  # every reason named, even when there is one
    scripted = page.locator("#bad-samples pre", has_text="<script>alert(1)</script>")
    assert scripted.count() > 0  # shown as text; a dialog would have failed the test
    assert page.locator("#bad-samples script").count() == 0
    shot(page, "bad-events")


def listed_keys(page: Any) -> list[str]:
    return list(page.locator("#customer-results tbody td:first-child a").all_inner_texts())


def test_customer_list_sorts_pages_and_keeps_its_range(page: Any, server: DashboardProcess) -> None:
    page.goto(f"{server.url}/customers?range=30d")
    page.click('th a[data-sort="lifetime_value"]')
    page.wait_for_url(re.compile(r"/customers\?range=30d&sort=lifetime_value$"))
    assert page.locator("th[aria-sort=descending]").inner_text().startswith("Lifetime value")
    values = [
        float(text.split()[0])
        for text in page.locator("#customer-results tbody td:nth-child(5)").all_inner_texts()
    ]
    assert len(values) == 50 and values == sorted(values, reverse=True)
    first = listed_keys(page)
    page.click("#page-next")
    page.wait_for_url(re.compile(r"&after="))
    second = listed_keys(page)
    assert second and not set(first) & set(second)
    page.click("#page-previous")
    page.wait_for_url(re.compile(r"&before="))
    assert listed_keys(page) == first
    page.click("#page-next")
    page.wait_for_url(re.compile(r"&after="))
    list_url = page.url
    page.locator("#customer-results tbody a").nth(3).click()
    page.wait_for_selector("#profile")
    assert page.locator("#profile h1").inner_text().startswith(second[3])
    page.click("#back-to-list")
    page.wait_for_url(list_url)
    assert listed_keys(page) == second
    assert page.locator("#range-select").input_value() == "30d"
    # A new range keeps the order and starts at the first page.
    page.select_option("#range-select", "24h")
    page.wait_for_url(re.compile(r"/customers\?sort=lifetime_value&range=24h$"))
    expected = api(page, "/api/customers?range=24h&sort=lifetime_value")
    assert listed_keys(page) == [c["visitor_key"] for c in expected["customers"]]
    count = page.locator("#customer-count").inner_text()
    assert count.startswith(f"{expected['total']:,} customer")
    assert count.endswith("last seen in the last 24h")


# Every element that sticks out of the window and is not inside a scrolling box of its own.
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  const scrolls = (node) => {
    for (let up = node.parentElement; up; up = up.parentElement) {
      if (["auto", "scroll", "hidden"].includes(getComputedStyle(up).overflowX)) return true;
    }
    return false;
  };
  const found = [];
  for (const node of document.body.querySelectorAll("*")) {
    const box = node.getBoundingClientRect();
    if (!box.width && !box.height) continue;
    if ((box.right > width + 0.5 || box.left < -0.5) && !scrolls(node)) {
      found.push(`${node.tagName.toLowerCase()}.${node.getAttribute("class") || ""}#${node.id}`
        + ` [${Math.round(box.left)}, ${Math.round(box.right)}] of ${width}`);
    }
  }
  const page = document.documentElement.scrollWidth;
  if (page > width) found.push(`page ${page} wide`);
  return found;
}"""
# True when every child of the header shares one line (their vertical extents all overlap).
HEADER_ON_ONE_LINE = """() => {
  const boxes = [...document.querySelector("header.top").children]
    .map((child) => child.getBoundingClientRect()).filter((box) => box.height);
  return Math.max(...boxes.map((b) => b.top)) < Math.min(...boxes.map((b) => b.bottom));
}"""
SCREENS = {"laptop": (1366, 768), "phone": (390, 844)}


@pytest.mark.parametrize("screen", SCREENS)
def test_layout_holds_at_laptop_and_phone_width(
    browser: Any, server: DashboardProcess, screen: str
) -> None:
    width, height = SCREENS[screen]
    with signed_in(browser, server, width, height) as page:
        key = api(page, "/api/customers?range=30d&limit=1")["customers"][0]["visitor_key"]
        for name, path in [
            ("overview", "/?range=30d"),
            ("customers", "/customers?range=30d"),
            ("customer", f"/customers/{key}?range=30d"),
            ("bad-events", "/bad-events?range=30d"),
        ]:
            page.goto(f"{server.url}{path}")
            if name in ("overview", "bad-events"):
                page.wait_for_selector("body[data-loaded=true]")
            if name == "overview":  # the hover box at the right edge stays inside too
                count = len(api(page, "/api/timeseries?range=30d")["buckets"])
                hover_bucket(page, "#chart-events", count - 1, count)
            shot(page, f"{name}-{screen}")
            assert page.evaluate(OVERFLOWING) == [], name
            if screen == "laptop":
                assert page.evaluate(HEADER_ON_ONE_LINE), name
            if screen == "laptop" and name != "customer":  # a customer has no range
                page.select_option("#range-select", "custom")  # the widest header there is
                assert page.evaluate(HEADER_ON_ONE_LINE), f"{name}, custom range"


async def mark_replayed(url: str, reason_part: str) -> int:
    """Stamp the bad events whose reason holds `reason_part` as `clickstream replay` does."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        status = await conn.execute(
            "UPDATE bad_events SET replayed_at = now() WHERE strpos(reason, $1) > 0", reason_part
        )
    finally:
        await conn.close()
    return int(status.split()[-1])


def samples_label(page: Any, text: str) -> None:
    page.wait_for_function(
        "text => document.getElementById('bad-page-label').textContent.startsWith(text)", arg=text
    )


def test_bad_events_page_counts_replays_filters_by_reason_and_pages(
    page: Any, server: DashboardProcess, seeded_url: str
) -> None:
    replayed = in_thread(lambda: mark_replayed(seeded_url, "occurred_at: expected RFC 3339"))
    assert replayed > 0
    page.goto(f"{server.url}/bad-events?range=30d")
    page.wait_for_selector("body[data-loaded=true]")
    data = api(page, "/api/bad-events?range=30d")
    reasons = page.locator("#bad-reasons tbody tr")
    assert reasons.count() == len(data["reasons"])
    row = reasons.filter(has_text="occurred_at: expected RFC 3339")
    assert row.locator("td").all_inner_texts()[2:] == ["0", f"{replayed:,}"]
    assert data["pages"] > 1  # the seed holds more bad events than a page shows

    samples = page.locator("#bad-samples tbody tr")
    assert samples.count() == len(data["samples"]) == 20
    page.click("#bad-page-next")
    samples_label(page, f"page 2 of {data['pages']}")
    assert "page=2" in page.url
    second = api(page, "/api/bad-events?range=30d&page=2")
    assert samples.count() == len(second["samples"])

    # A reason of the table filters the samples, from their first page.
    page.locator("#bad-reasons a", has_text="anonymous_id or user_id is required").click()
    samples_label(page, "page 1 of")
    shown = page.locator("#bad-samples .reason").all_inner_texts()
    assert shown and set(shown) == {"$.events[0]: anonymous_id or user_id is required"}
    assert "page=" not in page.url
    # A class from the menu shows every reason of that class.
    page.select_option("#bad-reason-class", "envelope")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#bad-samples tbody tr')].every("
        "row => row.children[1].firstChild.textContent === 'envelope')"
    )
    assert page.locator("#bad-reason-text").is_hidden()
    shot(page, "bad-events-filtered")
