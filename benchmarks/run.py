"""The end-to-end benchmark: every contender in turn, same core, same load, one run.

    .venv/bin/python benchmarks/run.py [--quick] [--out benchmarks/results]

Each HTTP contender is started pinned to CPU 0 (`taskset -c 0`) and loaded from CPU 1 by `wrk`
(closed loop, one thread) with one event per request (`/v1/events`) and 100-event batches
(`/v1/batch`), at several connection counts, several repetitions:

1. raw Granian, RSGI and ASGI (`benchmarks/peers/raw_granian.py`): reads the body, answers 202;
2. FastAPI + pydantic on uvicorn (`benchmarks/peers/fastapi_peer.py`), validating;
3. plain Starlette + msgspec on Granian (`benchmarks/peers/starlette_msgspec.py`), validating;
4. the gateway (`clickstream gateway`, one worker) with durable publish: every 202 means the
   Publish RPC to the built-in Pub/Sub emulator succeeded. The emulator runs on CPU 1 with the
   load generator; its subscriptions are deleted so it keeps no backlog;
5. the gateway with two workers on both CPUs (everything shares both CPUs: scaling on 2 cores).

Then the latency-under-load curve (open loop, `benchmarks/openloop.py` on CPU 1): p99 against
offered rate for raw Granian RSGI (shows where the generator itself stops keeping up) and the
gateway; then a Pub/Sub stall (emulator stopped with SIGSTOP for a few seconds under batch load)
showing 429/503 instead of an unbounded queue. Finally the processor end to end
(`processor_throughput.py` into PostgreSQL, `bigquery_append.py` into the BigQuery emulator),
unpinned. Writes results.md, results.json and PNG charts into --out. Needs wrk and taskset.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
PEERS = BENCH / "peers"
LUA = BENCH / "wrk" / "post.lua"
PYTHON = sys.executable
KEY = "bench"
SERVER_CPU = "0"
LOAD_CPU = "1"
ROUTES = {"single": ("/v1/events", 1), "batch": ("/v1/batch", 100)}


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(
    args: list[str],
    env: dict[str, str] | None = None,
    cpus: str | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A process group, pinned to `cpus`; SIGTERM (then SIGKILL) at exit."""
    if cpus is not None:
        args = ["taskset", "-c", cpus, *args]
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pids: list[int]) -> float:
    """Sum of each process's peak resident set (VmHWM)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- Pub/Sub emulator ------------------------------------------------------------------------


def wait_grpc(host: str, timeout: float = 60) -> None:
    import grpc

    with grpc.insecure_channel(host) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


def delete_subscriptions(emulator_host: str, project: str) -> None:
    """Durable publish is measured while the emulator keeps no growing backlog."""
    from clickstream.pubsub_admin import subscriber_async_client
    from clickstream_contract.config import Settings

    settings = Settings.from_env(
        {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project}
    )

    async def run() -> None:
        client = subscriber_async_client(settings)
        try:
            pager = await client.list_subscriptions(project=f"projects/{project}")
            async for subscription in pager:
                await client.delete_subscription(subscription=subscription.name)
        finally:
            await client.transport.close()

    asyncio.run(run())


# -- bodies and load -------------------------------------------------------------------------


def sample_event(index: int) -> dict[str, object]:
    return {
        "event_id": str(uuid.UUID(int=index + 1)),
        "event_type": "product_view",
        "occurred_at": datetime.now(UTC).isoformat(),
        "anonymous_id": "anon-6f1c2d",
        "session_id": "s-91",
        "page": {"url": "https://shop.example.com/p/123", "title": "Running shoe"},
        "context": {"user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "locale": "en-US"},
        "product": {"product_id": "p-123", "price": 59.9, "currency": "EUR"},
    }


def write_bodies(work: Path) -> dict[str, Path]:
    bodies = {"single": work / "single.json", "batch": work / "batch.json"}
    bodies["single"].write_bytes(json.dumps(sample_event(0)).encode())
    batch = {"events": [sample_event(i) for i in range(100)]}
    bodies["batch"].write_bytes(json.dumps(batch).encode())
    return bodies


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: Path, seconds: float, connections: int, cpus: str) -> dict[str, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            cpus,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
        ],
        env={**os.environ, "BODY_FILE": str(body), "WRITE_KEY": KEY},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else 0.0

    def percentile(p: str) -> float:
        found = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        return float(found.group(1)) * UNITS[found.group(2)] if found else float("nan")

    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50": percentile("50"),
        "p99": percentile("99"),
        "non2xx": number(r"Non-2xx or 3xx responses:\s+(\d+)"),
        "errors": sum(float(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)),
    }


def openloop(
    url: str, body: Path, rate: float, seconds: float, connections: int, cpus: str
) -> dict[str, object]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            cpus,
            PYTHON,
            str(BENCH / "openloop.py"),
            url,
            "--rate",
            str(rate),
            "--duration",
            str(seconds),
            "--connections",
            str(connections),
            "--body",
            str(body),
            "--header",
            f"Authorization: Bearer {KEY}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


# -- contenders ------------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    args: list[str]
    ready_path: str
    cpus: str = SERVER_CPU
    publishes: bool = False
    env: dict[str, str] = field(default_factory=dict)


def granian(interface: str, target: str, port: int) -> list[str]:
    return [
        PYTHON,
        "-m",
        "granian",
        "--interface",
        interface,
        "--working-dir",
        str(PEERS),
        "--port",
        str(port),
        "--no-ws",
        "--loop",
        "uvloop",
        "--log-level",
        "warning",
        target,
    ]


def contenders(port: int, gateway_env: dict[str, str]) -> list[Contender]:
    gateway = [PYTHON, "-m", "clickstream_contract.cli", "gateway", "--port", str(port)]
    return [
        Contender("raw Granian RSGI", granian("rsgi", "raw_granian:rsgi_app", port), "/"),
        Contender("raw Granian ASGI", granian("asgi", "raw_granian:app", port), "/"),
        Contender(
            "FastAPI + pydantic (uvicorn)",
            [
                PYTHON,
                "-m",
                "uvicorn",
                "--app-dir",
                str(PEERS),
                "fastapi_peer:app",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            "/docs",
        ),
        Contender(
            "Starlette + msgspec (Granian ASGI)",
            granian("asgi", "starlette_msgspec:app", port),
            "/v1/events",
        ),
        Contender("gateway, durable publish", gateway, "/readyz", publishes=True, env=gateway_env),
        Contender(
            "gateway, 2 workers (both CPUs)",
            [*gateway, "--workers", "2"],
            "/readyz",
            cpus="0,1",
            publishes=True,
            env=gateway_env,
        ),
    ]


@dataclass
class Run:
    contender: str
    route: str
    connections: int
    repetition: int
    rps: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    non2xx: float
    errors: float
    cpu_percent: float  # server processes, % of one core
    emulator_cpu_percent: float | None
    peak_rss_mib: float = 0.0


@dataclass
class Settings:
    connections: list[int]
    repetitions: int
    seconds: float
    rates_single: list[float]
    rates_batch: list[float]
    openloop_seconds: float
    processor_events: int
    bigquery_rows: int
    stall_rate: float = 400  # batches/s, well under the gateway's capacity when Pub/Sub is up


FULL = Settings(
    [16, 64, 256],
    2,
    6,
    [1e3, 2e3, 4e3, 6e3, 8e3, 10e3, 12e3, 14e3, 16e3, 18e3, 20e3, 24e3, 28e3],
    [100, 250, 500, 1000, 1500, 2000, 2500, 3000],
    4,
    200_000,
    60_000,
)
QUICK = Settings([64], 1, 3, [2e3, 6e3, 12e3], [500, 1500], 2, 20_000, 10_000)


def measure_contender(
    contender: Contender,
    port: int,
    bodies: dict[str, Path],
    settings: Settings,
    emulator: subprocess.Popen[bytes] | None,
    log_dir: Path,
    prepare: object = None,
) -> list[Run]:
    base = f"http://127.0.0.1:{port}"
    runs: list[Run] = []
    log = log_dir / (re.sub(r"\W+", "-", contender.name).strip("-") + ".log")
    with process(contender.args, contender.env, contender.cpus, log) as server:
        wait_http(base + contender.ready_path, server)
        if callable(prepare):
            prepare()
        load_cpu = LOAD_CPU if contender.cpus == SERVER_CPU else contender.cpus
        for route, (path, events) in ROUTES.items():
            wrk(base + path, bodies[route], 2, 64, load_cpu)  # warm-up
            for connections in settings.connections:
                for repetition in range(settings.repetitions):
                    pids = tree(server.pid)
                    cpu0, wall0 = cpu_seconds(pids), time.perf_counter()
                    emu0 = cpu_seconds(tree(emulator.pid)) if emulator else 0.0
                    result = wrk(
                        base + path, bodies[route], settings.seconds, connections, load_cpu
                    )
                    wall = time.perf_counter() - wall0
                    cpu = cpu_seconds(pids) - cpu0
                    emu = cpu_seconds(tree(emulator.pid)) - emu0 if emulator else None
                    runs.append(
                        Run(
                            contender.name,
                            route,
                            connections,
                            repetition,
                            result["rps"],
                            result["rps"] * events,
                            result["p50"],
                            result["p99"],
                            result["non2xx"],
                            result["errors"],
                            100 * cpu / wall,
                            100 * emu / wall if emu is not None else None,
                        )
                    )
                    print(
                        f"  {contender.name:34} {route:6} c={connections:<3} "
                        f"{result['rps']:9,.0f} req/s p99 {result['p99']:7.1f} ms "
                        f"cpu {100 * cpu / wall:4.0f}%",
                        flush=True,
                    )
        rss = peak_rss_mib(tree(server.pid))
    for run in runs:
        run.peak_rss_mib = rss
    return runs


def curve(
    name: str, base: str, body: Path, route: str, rates: list[float], settings: Settings
) -> list[dict[str, object]]:
    points = []
    for rate in rates:
        point = openloop(
            base + ROUTES[route][0], body, rate, settings.openloop_seconds, 256, LOAD_CPU
        )
        point.update(contender=name, route=route)
        points.append(point)
        print(
            f"  open loop {name:26} {route:6} offered {rate:8,.0f} achieved "
            f"{point['achieved_rps']:8,.0f} p99 {point['p99_ms']:8.1f} ms "
            f"{point['statuses']} unanswered {point['unanswered']}",
            flush=True,
        )
    return points


def stall(
    base: str,
    body: Path,
    emulator: subprocess.Popen[bytes],
    rate: float,
    seconds: float,
    freeze_s: float,
) -> dict[str, object]:
    """Open-loop batch load while the emulator is frozen for `freeze_s` in the middle."""

    def freeze() -> None:
        time.sleep(seconds / 2 - freeze_s / 2)
        os.kill(emulator.pid, signal.SIGSTOP)
        time.sleep(freeze_s)
        os.kill(emulator.pid, signal.SIGCONT)

    thread = threading.Thread(target=freeze)
    thread.start()
    try:
        result = openloop(base + "/v1/batch", body, rate, seconds, 256, LOAD_CPU)
    finally:
        thread.join()
        os.kill(emulator.pid, signal.SIGCONT)
    result.update(freeze_s=freeze_s)
    print(
        f"  stall: {result['statuses']} unanswered {result['unanswered']} "
        f"p99 {result['p99_ms']:.0f} ms",
        flush=True,
    )
    return result


def script_output(args: list[str], timeout: float = 900) -> str:
    done = subprocess.run(
        [PYTHON, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    return done.stdout + (
        f"\n(exit {done.returncode}) {done.stderr[-2000:]}" if done.returncode else ""
    )


def first_rate(text: str, label: str) -> float | None:
    """The first `N,NNN <unit>/s` figure on the line that starts with `label`."""
    for line in text.splitlines():
        if line.strip().startswith(label):
            found = re.search(r"([\d,]+(?:\.\d+)?) (?:events|rows)/s", line)
            if found:
                return float(found.group(1).replace(",", ""))
    return None


# -- report ----------------------------------------------------------------------------------


def aggregate(runs: list[Run]) -> list[dict[str, object]]:
    """Mean over repetitions per (contender, route, connections)."""
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.contender, run.route, run.connections), []).append(run)
    rows = []
    for (contender, route, connections), group in groups.items():
        emulator = [r.emulator_cpu_percent for r in group if r.emulator_cpu_percent is not None]
        rows.append(
            {
                "contender": contender,
                "route": route,
                "connections": connections,
                "rps": statistics.mean(r.rps for r in group),
                "rps_spread": (min(r.rps for r in group), max(r.rps for r in group)),
                "events_per_s": statistics.mean(r.events_per_s for r in group),
                "p50_ms": statistics.mean(r.p50_ms for r in group),
                "p99_ms": statistics.mean(r.p99_ms for r in group),
                "cpu_percent": statistics.mean(r.cpu_percent for r in group),
                "emulator_cpu_percent": statistics.mean(emulator) if emulator else None,
                "peak_rss_mib": group[0].peak_rss_mib,
                "non2xx": sum(r.non2xx for r in group),
                "errors": sum(r.errors for r in group),
            }
        )
    return rows


def ratio(rows: list[dict], row: dict, reference: str) -> str:
    for other in rows:
        if (other["contender"], other["route"], other["connections"]) == (
            reference,
            row["route"],
            row["connections"],
        ):
            return f"{row['rps'] / other['rps']:.2f}" if other["rps"] else "-"
    return "-"


def markdown(
    meta: dict, rows: list[dict], curves: list[dict], stalled: dict | None, processor: dict
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {meta['date']}",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['machine']}",
        f"- Versions: {meta['versions']}",
        f"- Load average (1/5/15 min): before {meta['loadavg_before']}, after "
        f"{meta['loadavg_after']}. **The machine is shared with other workers; treat absolute "
        "numbers as noisy and compare rows of the same run.**",
        f"- Layout: each server pinned to CPU {SERVER_CPU}; `wrk -t1` (closed loop, "
        f"{meta['seconds']} s per run, {meta['repetitions']} repetition(s), mean shown), the "
        f"open-loop generator and the built-in Pub/Sub emulator on CPU {LOAD_CPU}. The 2-worker "
        "gateway, its load and the emulator all share both CPUs.",
        "- CPU = server processes' CPU time / wall time (100% = one core); emulator CPU in "
        "brackets. Peak RSS = sum of the server processes' VmHWM.",
        "- Ratios are req/s against FastAPI + pydantic and against raw Granian RSGI at the same "
        "route and connection count.",
        "",
        "| contender | body | conns | req/s | events/s | p50 ms | p99 ms | CPU % | peak RSS MiB "
        "| x FastAPI | x raw RSGI | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = f"{row['cpu_percent']:.0f}"
        if row["emulator_cpu_percent"] is not None:
            cpu += f" ({row['emulator_cpu_percent']:.0f})"
        lines.append(
            f"| {row['contender']} | {row['route']} | {row['connections']} | {row['rps']:,.0f} "
            f"| {row['events_per_s']:,.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {cpu} "
            f"| {row['peak_rss_mib']:.0f} | {ratio(rows, row, 'FastAPI + pydantic (uvicorn)')} "
            f"| {ratio(rows, row, 'raw Granian RSGI')} | {row['non2xx']:.0f} |"
        )
    lines += [
        "",
        "## Latency under load (open loop, 256 connections)",
        "",
        "Latency from each request's scheduled send time (no coordinated omission). "
        "Unanswered = still waiting when the run ended (counted in the percentiles).",
        "",
        "| server | body | offered req/s | achieved req/s | p50 ms | p99 ms | statuses "
        "| unanswered |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for point in curves:
        lines.append(
            f"| {point['contender']} | {point['route']} | {point['offered_rps']:,.0f} "
            f"| {point['achieved_rps']:,.0f} | {point['p50_ms']:.1f} | {point['p99_ms']:.1f} "
            f"| {point['statuses']} | {point['unanswered']} |"
        )
    if stalled:
        lines += [
            "",
            "## Pub/Sub stall",
            "",
            f"Open-loop 100-event batches at {stalled['offered_rps']:,.0f} req/s for "
            f"{stalled['seconds']} s; the emulator process frozen (SIGSTOP) for "
            f"{stalled['freeze_s']} s in the middle; gateway queue bound "
            f"{stalled['queue_max_bytes'] // 2**20} MiB, publish deadline "
            f"{stalled['publish_timeout_s']} s. Statuses: {stalled['statuses']}, unanswered "
            f"{stalled['unanswered']}, p99 {stalled['p99_ms']:.0f} ms, gateway peak RSS "
            f"{stalled['peak_rss_mib']:.0f} MiB.",
        ]
    lines += ["", "## Processor end to end (unpinned)", ""]
    for name, entry in processor.items():
        rate = f"{entry['rate']:,.0f}" if entry["rate"] is not None else "n/a"
        rate += f" {entry['unit']} (wall)"
        if entry.get("per_core") is not None:
            rate += f"; the processor's own CPU: {entry['per_core']:,.0f} {entry['unit']} per core"
        lines += [
            f"**{name}**: {rate}",
            "",
            "```",
            entry["output"].strip(),
            "```",
            "",
        ]
    return "\n".join(lines) + "\n"


def charts(out: Path, rows: list[dict], curves: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if rows:
        written.append(throughput_chart(plt, out, rows))
    if curves:
        written.append(latency_chart(plt, out, curves))
    if any(r["contender"].startswith("gateway") for r in rows):
        written.append(scaling_chart(plt, out, rows))
    return written


def throughput_chart(plt: Any, out: Path, rows: list[dict]) -> str:
    at = 64 if any(r["connections"] == 64 for r in rows) else rows[0]["connections"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, route, key, label in (
        (axes[0], "single", "rps", "requests/s, one event per request"),
        (axes[1], "batch", "events_per_s", "events/s, 100-event batches"),
    ):
        picked = [r for r in rows if r["route"] == route and r["connections"] == at]
        ax.barh([r["contender"] for r in picked], [r[key] for r in picked], color="#4878a8")
        for i, r in enumerate(picked):
            ax.text(r[key], i, f" {r[key]:,.0f}", va="center", fontsize=8)
        ax.set_title(f"{label}\n({at} connections, server pinned to one core)", fontsize=10)
        ax.xaxis.set_major_formatter(lambda value, _: f"{value / 1000:g}k")
        ax.invert_yaxis()
        ax.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    return "throughput.png"


def latency_chart(plt: Any, out: Path, curves: list[dict]) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, route in zip(axes, ROUTES, strict=True):
        for name in sorted({str(p["contender"]) for p in curves if p["route"] == route}):
            points = [p for p in curves if p["contender"] == name and p["route"] == route]
            ax.plot(
                [p["offered_rps"] for p in points],
                [p["p99_ms"] for p in points],
                "o-",
                label=f"{name} p99",
            )
            ax.plot(
                [p["offered_rps"] for p in points],
                [p["p50_ms"] for p in points],
                "x--",
                label=f"{name} p50",
                alpha=0.6,
            )
        ax.set_yscale("log")
        ax.set_xlabel("offered requests/s (open loop)")
        ax.set_ylabel("latency from scheduled send, ms")
        ax.set_title(f"latency under load: {route}")
        ax.axhline(20, color="grey", linestyle=":", linewidth=1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latency_under_load.png", dpi=110)
    plt.close(fig)
    return "latency_under_load.png"


def scaling_chart(plt: Any, out: Path, rows: list[dict]) -> str:
    scaling = [r for r in rows if r["contender"].startswith("gateway")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, route, key in ((axes[0], "single", "rps"), (axes[1], "batch", "events_per_s")):
        for name in sorted({r["contender"] for r in scaling}):
            picked = [r for r in scaling if r["contender"] == name and r["route"] == route]
            ax.plot([r["connections"] for r in picked], [r[key] for r in picked], "o-", label=name)
        ax.set_xscale("log", base=2)
        connections = sorted({r["connections"] for r in scaling})
        ax.set_xticks(connections, [str(c) for c in connections])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("connections (wrk, closed loop)")
        ax.set_title(f"gateway scaling: {'req/s' if key == 'rps' else 'events/s'}, {route}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    plt.close(fig)
    return "scaling.png"


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return f"{os.cpu_count()} x {model}, {memory:.0f} GiB RAM, Linux {platform.release()}"


def versions() -> str:
    names = [
        "granian",
        "uvloop",
        "starlette",
        "msgspec",
        "grpcio",
        "google-cloud-pubsub",
        "fastapi",
        "pydantic",
        "uvicorn",
    ]
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    found = ", ".join(f"{name} {version(name)}" for name in names)
    wrk_text = wrk_version[1] if len(wrk_version) > 1 else "?"
    return f"Python {platform.python_version()}, {found}, wrk {wrk_text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one connection count, short runs")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--skip", action="append", default=[], help="skip a part: http, curve, stall, processor"
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="clickstream-bench-"))
    bodies = write_bodies(work)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            [".venv/bin/python", "benchmarks/run.py", *map(shlex.quote, sys.argv[1:])]
        ),
        "machine": machine(),
        "versions": versions(),
        "loadavg_before": loadavg(),
        "seconds": settings.seconds,
        "repetitions": settings.repetitions,
    }
    print(f"load average {meta['loadavg_before']}; logs in {work}", flush=True)

    emulator_port, port = free_port(), free_port()
    emulator_host = f"127.0.0.1:{emulator_port}"
    project = f"bench-{uuid.uuid4().hex[:8]}"
    gateway_env = {
        "PUBSUB_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": project,
        "CLICKSTREAM_WRITE_KEYS": KEY,
    }
    runs: list[Run] = []
    curves: list[dict[str, object]] = []
    stalled: dict[str, object] | None = None
    emulator_args = [
        PYTHON,
        "-m",
        "clickstream_contract.cli",
        "emulator",
        "pubsub",
        "--impl",
        "builtin",
    ]
    # The emulator creates the project's topics once it listens (the gateway never does).
    with process(
        [*emulator_args, "--port", str(emulator_port)],
        {"GOOGLE_CLOUD_PROJECT": project},
        cpus=LOAD_CPU,
        log=work / "emulator.log",
    ) as emulator:
        wait_grpc(emulator_host)
        prepare = lambda: delete_subscriptions(emulator_host, project)  # noqa: E731
        everyone = contenders(port, gateway_env)
        if "http" not in args.skip:
            for contender in everyone:
                print(contender.name, flush=True)
                runs += measure_contender(
                    contender,
                    port,
                    bodies,
                    settings,
                    emulator if contender.publishes else None,
                    work,
                    prepare if contender.publishes else None,
                )
        if "curve" not in args.skip:
            base = f"http://127.0.0.1:{port}"
            for contender in (everyone[0], everyone[4]):
                with process(
                    contender.args, contender.env, contender.cpus, work / "curve.log"
                ) as server:
                    wait_http(base + contender.ready_path, server)
                    if contender.publishes:
                        prepare()
                    scale = 1.0 if contender.publishes else 1.5
                    curves += curve(
                        contender.name,
                        base,
                        bodies["single"],
                        "single",
                        [r * scale for r in settings.rates_single],
                        settings,
                    )
                    curves += curve(
                        contender.name,
                        base,
                        bodies["batch"],
                        "batch",
                        [r * scale for r in settings.rates_batch],
                        settings,
                    )
        if "stall" not in args.skip:
            limits = {
                "CLICKSTREAM_GATEWAY_QUEUE_MAX_BYTES": str(4 * 2**20),
                "CLICKSTREAM_GATEWAY_PUBLISH_TIMEOUT_S": "2",
            }
            gateway = everyone[4]
            with process(
                gateway.args, {**gateway.env, **limits}, gateway.cpus, work / "stall.log"
            ) as server:
                base = f"http://127.0.0.1:{port}"
                wait_http(base + gateway.ready_path, server)
                prepare()
                seconds = 4 * settings.openloop_seconds
                stalled = stall(
                    base,
                    bodies["batch"],
                    emulator,
                    settings.stall_rate,
                    seconds,
                    seconds / 4,
                )
                stalled.update(
                    seconds=seconds,
                    queue_max_bytes=4 * 2**20,
                    publish_timeout_s=2,
                    peak_rss_mib=peak_rss_mib(tree(server.pid)),
                )

    processor: dict[str, dict[str, object]] = {}
    if "processor" not in args.skip:
        print("processor into PostgreSQL", flush=True)
        text = script_output(
            [str(BENCH / "processor_throughput.py"), "--events", str(settings.processor_events)]
        )
        processor["PostgreSQL (processor_throughput.py)"] = {
            "rate": first_rate(text, "decode + enrich + PG sink"),
            "per_core": first_rate(text, "processor CPU"),
            "unit": "events/s",
            "output": text,
        }
        print("BigQuery emulator append", flush=True)
        text = script_output(
            [str(BENCH / "bigquery_append.py"), "--rows", str(settings.bigquery_rows)]
        )
        processor["BigQuery emulator (bigquery_append.py)"] = {
            "rate": first_rate(text, "rows written"),
            "unit": "rows/s",
            "output": text,
        }

    meta["loadavg_after"] = loadavg()
    rows = aggregate(runs)
    (out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": [asdict(r) for r in runs],
                "rows": rows,
                "curves": curves,
                "stall": stalled,
                "processor": processor,
            },
            indent=1,
            default=str,
        )
    )
    report = markdown(meta, rows, curves, stalled, processor)
    if rows or curves:
        images = charts(out, rows, curves)
        report += "\n" + "\n".join(f"![{name}]({name})" for name in images) + "\n"
    (out / "results.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
