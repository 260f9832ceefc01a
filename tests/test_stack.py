"""`clickstream up` as a person runs it: in an empty folder, then Ctrl-C, then again.

Events sent by the Python SDK and by the browser tracker (a real page in headless Chromium)
reach PostgreSQL and BigQuery and show up on an open dashboard without a reload; Ctrl-C stops
every process the stack started; a second `up` in the same folder keeps the data. And the
deployed topology: `up --processor push --instances 2 --no-bigquery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from browser_testing import CHROMIUM, CHROMIUM_ARGS, requires_chromium
from gateway_server import free_port
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from clickstream.local_state import STATE_DIR_ENV
from clickstream.stack import STACK_VARIABLES
from clickstream_sdk import Client, Product

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    """This process's environment without anything that names a stack: what a new shell has."""
    return {k: v for k, v in os.environ.items() if k not in (*STACK_VARIABLES, STATE_DIR_ENV)}


class Stack:
    def __init__(self, folder: Path, shop_origin: str, *options: str) -> None:
        self.folder = folder
        self.options = options
        self.ports = {
            name: free_port()
            for name in ("gateway", "dashboard", "pubsub", "bigquery", "bigquery-grpc")
        }
        self.log_path = folder / "up.log"
        self.shop_origin = shop_origin
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def write_key(self) -> str:
        return (self.folder / ".clickstream" / "write-key").read_text().strip()

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.folder / '.clickstream' / 'postgres'}"

    def start(self) -> None:
        env = clean_env()
        env["CLICKSTREAM_CORS_ORIGINS"] = self.shop_origin
        args = [
            sys.executable, "-m", "clickstream_contract.cli", "up",
            "--gateway-port", str(self.ports["gateway"]),
            "--dashboard-port", str(self.ports["dashboard"]),
            "--pubsub-port", str(self.ports["pubsub"]),
            "--bigquery-port", str(self.ports["bigquery"]),
            "--bigquery-grpc-port", str(self.ports["bigquery-grpc"]),
            *self.options,
        ]  # fmt: skip
        already_logged = len(self.log())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 180
        while "clickstream is running" not in self.log()[already_logged:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"clickstream up did not start:\n{self.log()[-4000:]}")
            time.sleep(0.5)

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> set[int]:
        """Every live process whose ancestry leads to `up` (children run in new sessions)."""
        assert self.process is not None
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = set(), {self.process.pid}
        while frontier:
            children = {pid for pid, ppid in parents.items() if ppid in frontier}
            found |= children
            frontier = children
        return found

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to `up` alone, as a terminal would deliver it to the foreground job."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=120)


class Shop:
    """A shop page on loopback that includes the tracker from the gateway by one script tag."""

    def __init__(self) -> None:
        self.gateway_url = ""
        self.write_key = ""
        shop = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = shop.page().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def page(self) -> str:
        return f"""<!doctype html><html><head><title>Example Shop</title>
<script type="module">
  import {{ init }} from "{self.gateway_url}/sdk/v1/clickstream.js";
  window.cs = init({{ writeKey: "{self.write_key}", endpoint: "{self.gateway_url}" }});
  window.cs.productView({{ product_id: "JS-1", name: "Tracker shoe", price: 10, currency: "EUR" }});
  window.cs.flush();
</script></head><body>shop</body></html>"""


@pytest.fixture
def shop() -> Iterator[Shop]:
    shop = Shop()
    threading.Thread(target=shop.server.serve_forever, daemon=True).start()
    yield shop
    shop.server.shutdown()


async def wait_for_events(database_url: str, expected: int) -> set[str]:
    """The ids of the events PostgreSQL counted (its dedup keys), once there are `expected`
    and the aggregates count them too (no batch's deltas wait)."""
    ids: set[str] = set()
    for _ in range(120):
        conn = await asyncpg.connect(database_url)
        try:
            ids = {
                str(row[0])
                for row in await conn.fetch(
                    "SELECT event_id FROM event_ids WHERE NOT EXISTS (SELECT FROM delta_minutes)"
                )
            }
        finally:
            await conn.close()
        if len(ids) >= expected:
            return ids
        await asyncio.sleep(0.5)
    return ids


async def browse_shop(browser: Any, origin: str) -> None:
    page = await browser.new_page()
    await page.goto(origin)
    await page.wait_for_function("window.cs !== undefined")
    await page.close(run_before_unload=True)


async def open_dashboard(browser: Any, stack: Stack) -> Any:
    """The overview, signed in with the password `up` generated, over the last 15 minutes."""
    url = f"http://127.0.0.1:{stack.ports['dashboard']}"
    page = await browser.new_page()
    await page.goto(f"{url}/login")
    await page.fill("#password", (stack.folder / ".clickstream" / "dashboard-password").read_text())
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{url}/")
    await page.goto(f"{url}/?range=15m")
    await page.wait_for_selector("body[data-loaded=true]")
    await page.evaluate("window.__sameDocument = true")
    return page


def bigquery_events(stack: Stack) -> dict[str, str]:
    """event_id -> event_type of the events in BigQuery's events_dedup view."""
    client = bigquery.Client(
        project="clickstream-local",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=f"http://127.0.0.1:{stack.ports['bigquery']}"),
    )
    rows = client.query("SELECT event_id, event_type FROM clickstream.events_dedup").result()
    return {row.event_id: row.event_type for row in rows}


@requires_chromium
async def test_up_runs_the_platform_stops_cleanly_and_keeps_data(
    tmp_path: Path, shop: Shop
) -> None:
    stack = Stack(tmp_path, shop.origin)
    await asyncio.to_thread(stack.start)
    shop.gateway_url, shop.write_key = stack.gateway_url, stack.write_key

    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            dashboard = await open_dashboard(browser, stack)
            shoe = Product(product_id="PY-1", name="SDK shoe", price=20.0, currency="EUR")
            with Client(stack.write_key, url=stack.gateway_url) as client:
                who = {"anonymous_id": "sdk-visitor"}
                sent = [
                    client.page_view("https://shop.example/", **who),
                    client.product_view(shoe, **who),
                    client.add_to_cart(shoe, **who),
                    client.purchase("O-1", [shoe], currency="EUR", user_id="u-1", anonymous_id="x"),
                ]
            assert client.stats.accepted == len(sent)
            await browse_shop(browser, shop.origin)
            # The open dashboard counts all of them (SDK and tracker) without a reload.
            await dashboard.wait_for_function(
                "() => Number(document.querySelector('[data-kpi=events] .value')"
                ".textContent.replace(/,/g, '')) >= 6",
                timeout=60_000,
            )
            assert await dashboard.evaluate("window.__sameDocument") is True
        finally:
            await browser.close()

    ids = await wait_for_events(stack.database_url, len(sent) + 2)
    assert {str(event_id) for event_id in sent} <= ids
    for _ in range(60):
        if ids <= bigquery_events(stack).keys():
            break
        await asyncio.sleep(1)
    stored = bigquery_events(stack)
    assert ids <= stored.keys()
    tracker_types = {stored[i] for i in ids if i not in {str(e) for e in sent}}
    assert {"page_view", "product_view"} <= tracker_types

    # The emulators write to their own logs; the console keeps the platform's output.
    logs = tmp_path / ".clickstream" / "logs"
    for name, ready in (
        ("pubsub", "PUBSUB_EMULATOR_HOST="),
        ("bigquery", "BIGQUERY_EMULATOR_HOST="),
    ):
        assert ready in (logs / f"{name}-emulator.log").read_text(errors="replace")
        assert ready not in stack.log()

    children = stack.descendants()
    assert len(children) >= 5  # emulators, gateway, processor, dashboard (and their workers)
    assert await asyncio.to_thread(stack.interrupt) == 0
    alive = {pid for pid in children if Path(f"/proc/{pid}").exists()}
    assert not alive, f"processes left behind: {alive}\n{stack.log()[-3000:]}"

    # A second `up` in the same folder finds the same data.
    await asyncio.to_thread(stack.start)
    try:
        assert await wait_for_events(stack.database_url, len(ids)) == ids
    finally:
        await asyncio.to_thread(stack.interrupt)


def banner_commands(log: str) -> list[str]:
    """The commands the banner suggests, as printed (the indented lines after its heading)."""
    lines = log.rsplit("clickstream is running", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Commands, runnable"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        if not line.startswith("      "):  # deeper lines explain the command above them
            commands.append(line.strip())
    return commands


def run_printed(command: str, cwd: Path, **kwargs: Any) -> subprocess.Popen[str]:
    """A printed command line run by a shell, as a person pastes it, in a fresh environment."""
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=clean_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )


def still_running(pids: set[int], within_s: float = 10.0) -> set[int]:
    """The processes of `pids` still running (not zombies) after up to `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        running = set()
        for pid in pids:
            with contextlib.suppress(OSError):
                if "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text():
                    running.add(pid)
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.2)


def postmaster_pid(stack: Stack) -> int:
    return int(
        (stack.folder / ".clickstream" / "postgres" / "postmaster.pid").read_text().split()[0]
    )


async def test_the_banners_commands_work_as_printed_and_a_killed_up_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Points 3-8 of issue 17 against one demo stack, then SIGKILL and a second `up`."""
    stack = Stack(tmp_path, "http://127.0.0.1", "--demo", "--demo-events", "20000")
    await asyncio.to_thread(stack.start)
    console = stack.log()
    # Only the platform's own lines: no dependency's warnings or notices.
    for noise in ("XDG_RUNTIME_DIR", "experimental", "granian", "Warning", "Traceback"):
        assert noise not in console, f"{noise!r} on the console:\n{console}"
    assert "DEMO MODE" in console

    # The demo seeded a week of history before its live shoppers.
    database_url = stack.database_url
    conn = await asyncpg.connect(database_url)
    try:
        first = await conn.fetchval("SELECT min(minute) FROM metrics_minute")
        age = await conn.fetchval("SELECT now() - $1::timestamptz", first)
    finally:
        await conn.close()
    assert age.days >= 6, f"history starts only {age} ago"

    # The banner's commands, pasted into a shell with no variable set.
    simulate, send, audit, join = banner_commands(console)
    cli = send.split(" loadgen ")[0]  # how the banner spells the command
    assert " loadgen --rate 200 --duration 60" in simulate
    shoppers = run_printed(simulate, tmp_path)
    await asyncio.sleep(3)
    shoppers.send_signal(signal.SIGINT)  # `bash -c` runs the last command in place
    output, _ = await asyncio.to_thread(shoppers.communicate, timeout=60)
    assert shoppers.returncode == 0, output
    assert " 0 failed" in output and " 0 accepted" not in output, output

    sender = run_printed(send, tmp_path)
    output, _ = await asyncio.to_thread(sender.communicate, timeout=120)
    assert sender.returncode == 0 and "1,000 accepted" in output, output
    for _ in range(60):
        auditor = run_printed(audit, tmp_path)
        report, _ = await asyncio.to_thread(auditor.communicate, timeout=60)
        if auditor.returncode == 0:
            break
        assert "Traceback" not in report, report
        await asyncio.sleep(1)
    assert auditor.returncode == 0 and "OK: every id accounted for" in report, report
    eraser = run_printed(f"{cli} erase --user-id nobody --dry-run --no-bigquery", tmp_path)
    erased, _ = await asyncio.to_thread(eraser.communicate, timeout=60)
    assert eraser.returncode == 0 and '"dry_run": true' in erased, erased

    # Another processor joins with the variables `env` prints (none of them exported here).
    assert join.startswith('eval "$(') and join.endswith(' env)"')
    processor = run_printed(f"{join}; exec {cli} processor", tmp_path)
    assert processor.stdout is not None
    joined = ""
    while "processing events-processor" not in joined and processor.poll() is None:
        joined += await asyncio.to_thread(processor.stdout.readline)
    assert "processing events-processor" in joined, joined
    await asyncio.sleep(2)
    assert processor.poll() is None, "the joined processor died"
    processor.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(processor.wait, 60) == 0

    # Killed outright: PostgreSQL (daemonized) and a gateway worker outlive the supervisor.
    children = stack.descendants()
    server = postmaster_pid(stack)
    assert stack.process is not None
    stack.process.kill()
    stack.process.wait()
    await asyncio.sleep(1)
    assert still_running({server}, 0) == {server}
    assert still_running(children, 0), "nothing outlived up"

    # The next `up` stops the leftovers, adopts the server, and stops it at the end.
    await asyncio.to_thread(stack.start)
    assert not still_running(children, 0), "leftovers of the killed run"
    assert "left running by an earlier, killed run" in stack.log()
    assert postmaster_pid(stack) == server
    assert "no history seeded" in stack.log()  # the demo does not seed twice
    second = stack.descendants()
    assert await asyncio.to_thread(stack.interrupt) == 0
    left = still_running(second | {server})
    assert not left, f"processes left behind: {left}\n{stack.log()[-3000:]}"


async def test_up_pushes_into_function_instances_and_runs_without_bigquery(
    tmp_path: Path,
) -> None:
    """`up --processor push --instances 2 --no-bigquery`: the topology Terraform deploys (Pub/Sub
    pushes into the Cloud Function, here two instances behind one port), PostgreSQL alone; and
    the built-in Pub/Sub emulator even where Google's is installed."""
    stack = Stack(tmp_path, "http://127.0.0.1", "--processor", "push", "--instances", "2",
                  "--no-bigquery", "--pubsub-emulator", "builtin")  # fmt: skip
    await asyncio.to_thread(stack.start)
    try:
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in stack.descendants()]
        assert any(b"pubsub\0" in c and b"--impl\0builtin" in c for c in commands)
        assert not any(b"java" in c for c in commands)
        banner = stack.log().rsplit("clickstream is running", 1)[1]
        assert "2 Cloud Function instance(s) at http://127.0.0.1:" in banner
        assert "off (--no-bigquery)" in banner and "BIGQUERY_EMULATOR_HOST" not in banner
        functions = [
            pid
            for pid in stack.descendants()
            if b"function" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(functions) >= 3  # the server and its two instances

        with Client(stack.write_key, url=stack.gateway_url) as client:
            sent = [
                client.page_view(f"https://shop.example/{n}", anonymous_id=f"visitor-{n % 3}")
                for n in range(30)
            ]
            sent.append(client.identify("user-7", anonymous_id="visitor-1"))
        assert client.stats.accepted == len(sent)
        ids = await wait_for_events(stack.database_url, len(sent))
        assert ids == {str(event_id) for event_id in sent}
        conn = await asyncpg.connect(stack.database_url)
        try:
            visitors = {row[0] for row in await conn.fetch("SELECT visitor_key FROM customers")}
        finally:
            await conn.close()
        assert visitors == {"visitor-0", "user-7", "visitor-2"}  # visitor-1 signed in
        logs = tmp_path / ".clickstream" / "logs"
        assert not (logs / "bigquery-emulator.log").exists()
    finally:
        assert await asyncio.to_thread(stack.interrupt) == 0
