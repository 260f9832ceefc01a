"""Recovery: SIGKILL a processor mid-stream; how long until every accepted event is counted?

    .venv/bin/python benchmarks/push_recovery.py [--emulator builtin google] [--topology pull push]
        [--runs 5] [--events 4000] [--instances 2] [--out benchmarks/results/recovery.md]

Each run starts a fresh pipeline (benchmarks/push_harness.py), publishes `--events` shopper
events (4 per message, 400 events/s) and SIGKILLs the processor 3 s in: the pull worker (then
restarted after 1 s, as `clickstream up`'s supervisor does) or one push instance (gunicorn starts
another). It reports the seconds from the kill until the aggregates count every event, and checks
exactly once: the dedup keys and the aggregates' event count both equal the events sent.
Limit: a run fails past 90 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg
from processor_throughput import fresh_database
from push_harness import (
    counted_events,
    database_server,
    kill,
    machine,
    pipeline,
    stored_events,
    wait_until_counted,
    workload,
)

PER_MESSAGE = 4
RATE = 100.0  # messages per second: 400 events/s
KILL_AFTER = 3.0
RESTART_AFTER = 1.0  # the supervisor's first backoff
LIMIT = 90.0


async def one_run(emulator: str, topology: str, events: int, instances: int, url: str) -> dict:
    messages = workload(events, PER_MESSAGE, seed=int(time.time()))
    logs = Path(tempfile.mkdtemp(prefix="recovery-"))
    async with pipeline(emulator, topology, instances, url, logs) as bench:
        publishing = asyncio.create_task(bench.publish(messages, RATE))
        await asyncio.sleep(KILL_AFTER)
        victim = bench.instance_pids()[0]
        kill(victim)
        killed_at = time.monotonic()
        if topology == "pull":
            assert bench.processor is not None
            await asyncio.to_thread(bench.processor.wait)
            await asyncio.sleep(RESTART_AFTER)
            bench.start_processor()
        await publishing
        waited = await wait_until_counted(url, events, LIMIT)
        recovered = None if waited is None else time.monotonic() - killed_at
        conn = await asyncpg.connect(url)
        try:
            stored, counted = await stored_events(conn), await counted_events(conn)
        finally:
            await conn.close()
    return {
        "emulator": emulator,
        "topology": topology,
        "events": events,
        "stored": stored,
        "counted": counted,
        "recovered_s": recovered,
        "logs": str(logs),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emulator", nargs="+", default=["builtin", "google"])
    parser.add_argument("--topology", nargs="+", default=["pull", "push"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    with database_server() as server:
        for emulator in args.emulator:
            for topology in args.topology:
                for run in range(args.runs):
                    async with fresh_database(server) as url:
                        result = await one_run(emulator, topology, args.events, args.instances, url)
                    results.append(result)
                    print(f"{emulator:8} {topology:5} run {run + 1}: {result}", flush=True)
    lines = [
        "| emulator | topology | runs | worst s from SIGKILL to all counted | exactly once |",
        "|---|---|---|---|---|",
    ]
    for emulator in args.emulator:
        for topology in args.topology:
            runs = [r for r in results if (r["emulator"], r["topology"]) == (emulator, topology)]
            times = [r["recovered_s"] for r in runs]
            worst = "not within 90 s" if None in times else f"{max(times):.1f}"
            exact = all(r["stored"] == r["counted"] == r["events"] for r in runs)
            lines.append(f"| {emulator} | {topology} | {len(runs)} | {worst} | {exact} |")
    command = " ".join(["benchmarks/push_recovery.py", *sys.argv[1:]])
    lines = [f"Command: `{command}`", "", f"Machine: {machine()}", "", *lines]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    asyncio.run(main())
