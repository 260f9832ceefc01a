"""Load test: the gateway with durable publish to a local Pub/Sub emulator, next to its peers.

    .venv/bin/python benchmarks/load.py [--duration 10] [--connections 64]

Starts Google's Pub/Sub emulator (or the built-in one), the gateway (one Granian worker pinned
to CPU 0), runs `wrk` pinned to CPU 1 against /v1/events (one event) and /v1/batch (100 events),
then does the same against the FastAPI + pydantic peer on uvicorn and a raw Granian ASGI app
(both validate-or-nothing, no publishing), and prints one table. Needs `wrk`
(`apt-get install wrk`) and `taskset` (util-linux). Everything binds 127.0.0.1 and is stopped
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
LUA = ROOT / "benchmarks" / "wrk" / "post.lua"
KEY = "bench"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@contextlib.contextmanager
def process(
    args: list[str],
    env: dict[str, str] | None = None,
    cpus: str | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
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


def wait_grpc(host: str, timeout: float = 60) -> None:
    import grpc

    with grpc.insecure_channel(host) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


def delete_subscriptions(emulator_host: str, project: str) -> None:
    """Publish into topics without subscribers: durable publish is measured, while the
    emulator holds no growing backlog (the Java emulator pauses for GC with one)."""
    from clickstream.config import Settings
    from clickstream.pubsub_clients import subscriber_async_client

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


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: Path, seconds: int, connections: int, cpus: str) -> dict[str, float]:
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
            "-s",
            str(LUA),
            url,
        ],
        env={**os.environ, "BODY_FILE": str(body), "WRITE_KEY": KEY},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-cpus", default="0", help="CPUs for the server under test")
    parser.add_argument("--load-cpus", default="1", help="CPUs for wrk and the emulator")
    parser.add_argument("--emulator", choices=("google", "builtin"), default="google")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="clickstream-load-"))
    single = work / "single.json"
    single.write_bytes(json.dumps(sample_event(0)).encode())
    batch = work / "batch.json"
    batch.write_bytes(json.dumps({"events": [sample_event(i) for i in range(100)]}).encode())
    results: list[tuple[str, str, dict[str, float], int]] = []

    def measure(name: str, base: str) -> None:
        for route, body, events in (("/v1/events", single, 1), ("/v1/batch", batch, 100)):
            wrk(base + route, body, 2, args.connections, args.load_cpus)  # warm-up
            results.append(
                (
                    name,
                    route,
                    wrk(base + route, body, args.duration, args.connections, args.load_cpus),
                    events,
                )
            )

    emulator_port, gateway_port = free_port(), free_port()
    emulator_host = f"127.0.0.1:{emulator_port}"
    project = f"load-{uuid.uuid4().hex[:8]}"
    with process(
        [
            PYTHON,
            "-m",
            "clickstream.cli",
            "emulator",
            "pubsub",
            "--impl",
            args.emulator,
            "--port",
            str(emulator_port),
        ],
        cpus=args.load_cpus,
        log=work / "emulator.log",
    ):
        wait_grpc(emulator_host)
        env = {
            "PUBSUB_EMULATOR_HOST": emulator_host,
            "GOOGLE_CLOUD_PROJECT": project,
            "CLICKSTREAM_WRITE_KEYS": KEY,
        }
        with process(
            [PYTHON, "-m", "clickstream.cli", "gateway", "--port", str(gateway_port)],
            env=env,
            cpus=args.server_cpus,
            log=work / "gateway.log",
        ) as gateway:
            base = f"http://127.0.0.1:{gateway_port}"
            wait_http(base + "/readyz", gateway)
            delete_subscriptions(emulator_host, project)
            measure("gateway (durable publish)", base)

    port = free_port()
    with process(
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
        cpus=args.server_cpus,
    ) as peer:
        wait_http(f"http://127.0.0.1:{port}/docs", peer)
        measure("FastAPI + pydantic, uvicorn (no publish)", f"http://127.0.0.1:{port}")

    port = free_port()
    with process(
        [
            PYTHON,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--working-dir",
            str(PEERS),
            "--port",
            str(port),
            "--no-ws",
            "raw_granian:app",
        ],
        cpus=args.server_cpus,
    ) as raw:
        wait_http(f"http://127.0.0.1:{port}/", raw)
        measure("raw Granian ASGI (no parsing)", f"http://127.0.0.1:{port}")

    print(
        f"\n{args.connections} connections, {args.duration} s per run, server on CPU "
        f"{args.server_cpus}, wrk + emulator on CPU {args.load_cpus}\n"
    )
    print("| server | route | req/s | events/s | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, route, r, events in results:
        print(
            f"| {name} | {route} | {r['rps']:,.0f} | {r['rps'] * events:,.0f} | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | {r['errors']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
