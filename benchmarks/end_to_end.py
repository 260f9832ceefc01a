"""End to end: gateway batches in, until the dashboard counts every event.

    .venv/bin/python benchmarks/end_to_end.py [--events 2000000] [--batch 500]
        [--concurrency 8] [--processor pull|push] [--instances 2] [--bigquery]
        [--pubsub-emulator auto|google|builtin]

Starts `clickstream up` (BigQuery off unless `--bigquery`) in a throwaway state folder on ports
of its own, encodes the shopper model's events (`clickstream.shoppers.Traffic`) into
`/v1/batch` bodies before the clock starts, sends them to the gateway with `concurrency`
requests in flight (429/503 resent after `Retry-After`, as the SDK does), and polls
`metrics_minute` (the counts the dashboard shows) until it holds every accepted event.

Prints the intake rate (events the gateway acknowledged per second of sending), the end-to-end
rate (events over the time from the first request to the last event counted), and each part's
CPU per event from /proc: the gateway, the Pub/Sub emulator, the processor, PostgreSQL (every
process of the embedded server) and this load generator. Everything shares the machine, so the
CPU figures say which part limits the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg
import httpx

from clickstream.shoppers import Traffic

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bodies(events: int, batch: int, seed: int) -> list[bytes]:
    traffic = Traffic(seed=seed, concurrent=512)
    out = []
    for start in range(0, events, batch):
        items = [g.data for g in itertools.islice(traffic, min(batch, events - start))]
        out.append(b'{"events":[' + b",".join(items) + b"]}")
    return out


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def part_of(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [w.decode(errors="replace") for w in argv]
    for name in ("gateway", "processor", "function", "dashboard", "loadgen"):
        if name in words:
            return "processor" if name == "function" else name
    if "emulator" in words:
        return f"{words[words.index('emulator') + 1]}-emulator"
    return "other"


def parts(up_pid: int, postgres_dir: Path) -> dict[str, list[int]]:
    """Process ids per part: the supervisor's children and their descendants, and the
    embedded PostgreSQL (pgserver daemonizes it, so it is not in the supervisor's tree)."""
    groups: dict[str, list[int]] = {}
    for child in children(up_pid):
        todo, tree = [child], []
        while todo:
            pid = todo.pop()
            tree.append(pid)
            with contextlib.suppress(OSError):  # it exited meanwhile
                todo += children(pid)
        groups.setdefault(part_of(child), []).extend(tree)
    pidfile = postgres_dir / "postmaster.pid"
    if pidfile.exists():
        postmaster = int(pidfile.read_text().split()[0])
        groups["postgresql"] = [postmaster, *children(postmaster)]
    return groups


def cpu_by_part(up_pid: int, postgres_dir: Path) -> Counter[str]:
    usage: Counter[str] = Counter()
    for name, pids in parts(up_pid, postgres_dir).items():
        usage[name] += sum(cpu_seconds(pid) for pid in pids)
    usage["load generator"] = time.process_time()
    return usage


def start_stack(args: argparse.Namespace, state: Path) -> tuple[subprocess.Popen[bytes], dict]:
    ports = {flag: free_port() for flag in ("gateway", "dashboard", "pubsub", "function")}
    command = [
        str(REPO / ".venv/bin/clickstream"),
        "up",
        "--state-dir",
        str(state),
        "--processor",
        args.processor,
        "--instances",
        str(args.instances),
        "--pubsub-emulator",
        args.pubsub_emulator,
        *(item for flag, port in ports.items() for item in (f"--{flag}-port", str(port))),
    ]
    if args.bigquery:
        command += ["--bigquery-port", str(free_port()), "--bigquery-grpc-port", str(free_port())]
    else:
        command.append("--no-bigquery")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    for name in ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        env.pop(name, None)
    stack = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (state / "stack.json").exists():
        if stack.poll() is not None or time.monotonic() > deadline:
            assert stack.stderr is not None
            raise SystemExit(f"clickstream up failed:\n{stack.stderr.read().decode()}")
        time.sleep(0.5)
    return stack, json.loads((state / "stack.json").read_text())["env"]


async def send(url: str, key: str, batches: list[bytes], concurrency: int) -> tuple[int, float]:
    accepted = 0
    queue = iter(batches)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:

        async def worker() -> None:
            nonlocal accepted
            for body in queue:
                while True:
                    answer = await http.post("/v1/batch", content=body)
                    if answer.status_code in (429, 503):
                        await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                        continue
                    answer.raise_for_status()
                    result = answer.json()
                    accepted += result["accepted"]
                    break

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return accepted, time.monotonic() - started


async def counted(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(events), 0) FROM metrics_minute"))
    finally:
        await conn.close()


async def measure(args: argparse.Namespace, state: Path) -> None:
    print(f"encoding {args.events:,} events ...", file=sys.stderr)
    batches = bodies(args.events, args.batch, args.seed)
    stack, env = start_stack(args, state)
    try:
        url, key = env["CLICKSTREAM_GATEWAY_URL"], env["CLICKSTREAM_WRITE_KEYS"].split("=")[0]
        database_url = env["DATABASE_URL"]
        before = await counted(database_url)
        cpu_before = cpu_by_part(stack.pid, state / "postgres")
        started = time.monotonic()
        accepted, sending = await send(url, key, batches, args.concurrency)
        print(f"sent: {accepted:,} accepted in {sending:.1f} s", file=sys.stderr)
        while (now_counted := await counted(database_url) - before) < accepted:
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"timed out: {now_counted:,} of {accepted:,} counted")
            await asyncio.sleep(0.2)
        total = time.monotonic() - started
        cpu = cpu_by_part(stack.pid, state / "postgres") - cpu_before
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=120)
    print(f"\n{accepted:,} events, processor {args.processor}", end="")
    print(f" x{args.instances}" if args.processor == "push" else "", end="")
    print(f", BigQuery {'on' if args.bigquery else 'off'}, Pub/Sub emulator {args.pubsub_emulator}")
    print(f"intake:     {accepted / sending:,.0f} events/s ({sending:.1f} s)")
    print(f"end to end: {accepted / total:,.0f} events/s ({total:.1f} s to the last count)")
    print("CPU per event (µs), over the whole run:")
    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        if seconds > 0:
            print(f"  {name:<18} {seconds / accepted * 1e6:6.1f}   ({seconds:.1f} s)")
    print(f"  {'all':<18} {sum(cpu.values()) / accepted * 1e6:6.1f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--processor", choices=("pull", "push"), default="pull")
    parser.add_argument("--instances", type=int, default=2, help="with --processor push")
    parser.add_argument("--bigquery", action="store_true", help="with the BigQuery sink")
    parser.add_argument(
        "--pubsub-emulator", choices=("auto", "google", "builtin"), default="auto",
        help="as `clickstream up --pubsub-emulator` (auto: Google's when installed)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clickstream-e2e-") as state:
        asyncio.run(measure(args, Path(state)))


if __name__ == "__main__":
    main()
