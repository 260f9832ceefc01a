"""Dashboard latency on a month of data: every JSON endpoint, every range, and the overview page
in headless Chromium. Bounded: N requests per endpoint and range, K page loads.

    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/dashboard_bench.py \
        [--events 5000000] [--requests 40] [--loads 5] [--screenshot docs/dashboard-overview.png]

The database is migrated, then seeded with `--events` over 30 days unless it already holds
events (so a seeded database is reused). Without DATABASE_URL a throwaway pgserver is used
(seeding 5M events takes several minutes). Targets: p95 < 100 ms per endpoint; overview
interactive (every chart drawn) in < 1 s. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import httpx

# The dashboard's test helpers start the real `clickstream dashboard` server and know Chromium.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser_testing import CHROMIUM, CHROMIUM_ARGS, chromium_missing
from dashboard_testing import PASSWORD, dashboard_server

from clickstream.local_postgres import postgres_url
from dashboard.ranges import PRESETS
from dashboard.seed import seed_database
from processor.migrations import migrate

RANGE_ENDPOINTS = (
    "/api/kpis",
    "/api/timeseries",
    "/api/funnel",
    "/api/products",
    "/api/traffic",
    "/api/devices",
    "/api/bad-events",
)


async def prepare(url: str, events: int) -> str:
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        # Events counted (PostgreSQL keeps no raw events since migration 201).
        count = await conn.fetchval("SELECT coalesce(sum(events), 0) FROM metrics_minute")
        top = await conn.fetchval(
            "SELECT visitor_key FROM customers ORDER BY lifetime_value DESC LIMIT 1"
        )
    finally:
        await conn.close()
    if count == 0:
        print(await seed_database(url, events=events, progress=print), flush=True)
        return await prepare(url, events)
    print(f"database holds {count:,} events", flush=True)
    return str(top)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(client: httpx.Client, path: str, n: int) -> tuple[float, float, float]:
    client.get(path).raise_for_status()  # warm: prepared statements, plans, caches
    times = []
    for _ in range(n):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), percentile(times, 0.95), max(times)


def endpoints(top_customer: str) -> list[str]:
    paths = [f"{e}?range={r}" for r in PRESETS for e in RANGE_ENDPOINTS]
    return [*paths, "/api/customers", "/api/customers?q=user1", f"/api/customers/{top_customer}"]


def bench_endpoints(base: str, top_customer: str, n: int) -> list[float]:
    with httpx.Client(base_url=base, timeout=30) as client:
        client.post("/login", data={"password": PASSWORD}, headers={"origin": base})
        print(f"\n{'endpoint':44} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        p95s = []
        for path in endpoints(top_customer):
            p50, p95, worst = measure(client, path, n)
            p95s.append(p95)
            flag = "" if p95 < 100 else "  <-- over 100 ms"
            print(f"{path:44} {p50:8.1f} {p95:8.1f} {worst:8.1f}{flag}", flush=True)
        return p95s


def bench_browser(base: str, loads: int, screenshot: Path | None) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=base)
        page = context.new_page()
        page.goto("/login")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")
        print(f"\n{'overview load until every chart is drawn':44} {'median':>8} {'max':>8}")
        for preset in ("24h", "7d", "30d"):
            times = []
            for _ in range(loads):
                started = time.perf_counter()
                page.goto(f"/?range={preset}")
                page.wait_for_selector("body[data-loaded=true]")
                times.append((time.perf_counter() - started) * 1000)
            median, worst = statistics.median(times), max(times)
            print(f"{'/?range=' + preset:44} {median:8.0f} {worst:8.0f} ms", flush=True)
        if screenshot:
            page.goto("/?range=7d")
            page.wait_for_selector("body[data-loaded=true]")
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--requests", type=int, default=40, help="per endpoint and range")
    parser.add_argument("--loads", type=int, default=5, help="overview page loads per range")
    parser.add_argument("--screenshot", type=Path, help="save the 7-day overview here")
    args = parser.parse_args()
    with postgres_url() as url:
        top_customer = asyncio.run(prepare(url, args.events))
        print(f"machine: {os.cpu_count()} cores, shared with other work: timings are noisy")
        with dashboard_server(url) as server:
            p95s = bench_endpoints(server.url, top_customer, args.requests)
            print(f"\nworst p95 over all endpoints: {max(p95s):.1f} ms")
            if chromium_missing() is None:
                bench_browser(server.url, args.loads, args.screenshot)
            else:
                print(f"browser part skipped: {chromium_missing()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
