"""Push topology: throughput with 1, 2 and 4 function instances against one PostgreSQL.

    .venv/bin/python benchmarks/push_throughput.py [--instances 1 2 4] [--events 50000]
        [--per-message 25] [--emulator builtin] [--out benchmarks/results/push_topology]

For each count of instances, a fresh pipeline (benchmarks/push_harness.py): the shopper
workload (sign-ins included) is published while the subscriptions pull, 5% of its messages
twice (a gateway retry), then the subscriptions are switched to push into `clickstream function
--instances N`, and the clock runs until the aggregates count every event. The streaming-pull
worker drains the same backlog in the same run, as the peer. Meanwhile pg_stat_activity is sampled
every 20 ms: of the samples where a backend of the run's database is active, the share waiting on
a lock (wait_event_type = 'Lock') is the time batches wait on locks. The function's logs give the
transaction conflicts retried in an invocation, and those that failed it (Pub/Sub redelivered).
Exactly once: dedup keys and the aggregates' event count both equal the distinct events sent.
Writes OUT.md (table) and OUT.png (chart).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg
from processor_throughput import fresh_database
from push_harness import (
    counted_events,
    database_server,
    machine,
    pipeline,
    stored_events,
    wait_until_counted,
    workload,
)

from clickstream.pubsub_admin import ensure_topology
from clickstream.push import CONCURRENCY

DUPLICATE_SHARE = 0.05
SAMPLE_EVERY = 0.02


async def sample_locks(
    url: str, database: str, stop: asyncio.Event
) -> tuple[int, int, Counter[str]]:
    """(active samples, samples waiting on a lock, what the waiters wait for) of the database's
    backends: the lock's type and relation, and the waiting statement's first words."""
    conn = await asyncpg.connect(url)
    active = waiting = 0
    waits: Counter[str] = Counter()
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                """SELECT a.wait_event_type, l.locktype, l.relation::regclass::text AS relation,
                          left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60) AS query
                   FROM pg_stat_activity a
                   LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
                   WHERE a.datname = $1 AND a.state = 'active' AND a.pid <> pg_backend_pid()""",
                database,
            )
            active += len(rows)
            for row in rows:
                if row["wait_event_type"] == "Lock":
                    waiting += 1
                    waits[f"{row['locktype']} {row['relation'] or ''}: {row['query']}"] += 1
            await asyncio.sleep(SAMPLE_EVERY)
    finally:
        await conn.close()
    return active, waiting, waits


async def one_run(emulator: str, topology: str, instances: int, args: argparse.Namespace) -> dict:
    messages = workload(args.events, args.per_message)
    duplicates = messages[:: int(1 / DUPLICATE_SHARE)]
    logs = Path(tempfile.mkdtemp(prefix="push-throughput-"))
    async with fresh_database(args.server) as url:
        database = urlsplit(url).path.lstrip("/")  # pgserver's URLs end in ?host=/tmp/...
        async with pipeline(emulator, topology, instances, url, logs, start=False) as bench:
            bench.concurrency = args.concurrency
            await bench.publish(messages + duplicates)  # the backlog, while nothing consumes
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_locks(url, database, stop))
            started = time.monotonic()
            bench.start_processor()
            if topology == "push":
                await ensure_topology(bench.settings, bench.push_url)
            waited = await wait_until_counted(url, args.events, args.limit)
            elapsed = time.monotonic() - started
            stop.set()
            active, waiting, waits = await sampler
            conn = await asyncpg.connect(url)
            try:
                stored, counted = await stored_events(conn), await counted_events(conn)
            finally:
                await conn.close()
    log = (logs / f"processor-{topology}.log").read_text(errors="replace")
    return {
        "emulator": emulator,
        "topology": topology,
        "instances": instances if topology == "push" else 1,
        "events": args.events,
        "messages": len(messages) + len(duplicates),
        "seconds": elapsed if waited is not None else None,
        "events_per_s": args.events / elapsed if waited is not None else None,
        "active_samples": active,
        "lock_wait_share": waiting / active if active else 0.0,
        "conflicts_retried": log.count("transaction conflict") - log.count("giving up"),
        "conflicts_redelivered": log.count("giving up"),
        "handoffs": log.count("leaving the rest to a batch in flight"),
        "exactly_once": stored == counted == args.events,
        "waits": waits.most_common(3),
    }


def write(results: list[dict], out: Path, command: str) -> None:
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}",
        "",
        "| processor | instances | events/s | seconds | lock-wait share | conflicts retried"
        " in the invocation | reached Pub/Sub | applier hand-offs | exactly once |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rate = "-" if r["events_per_s"] is None else f"{r['events_per_s']:,.0f}"
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['topology']} ({r['emulator']}) | {r['instances']} | {rate} | {seconds} "
            f"| {r['lock_wait_share']:.1%} | {r['conflicts_retried']} "
            f"| {r['conflicts_redelivered']} of {r['messages']} messages | {r['handoffs']} "
            f"| {r['exactly_once']} |"
        )
    lines += [
        "",
        "What waiting backends waited for (lock type, relation: statement), most sampled:",
    ]
    for r in results:
        for what, count in r["waits"]:
            lines.append(f"- {r['topology']} x{r['instances']}: {count} samples: `{what}`")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    push = [r for r in results if r["topology"] == "push" and r["events_per_s"]]
    pull = [r for r in results if r["topology"] == "pull" and r["events_per_s"]]
    fig, rate_axis = plt.subplots(figsize=(7, 4))
    labels = [f"push x{r['instances']}" for r in push] + ["pull worker" for _ in pull]
    rates = [r["events_per_s"] for r in push + pull]
    rate_axis.bar(labels, rates, color=["tab:blue"] * len(push) + ["tab:gray"] * len(pull))
    rate_axis.set_ylabel("events/s until all counted")
    share_axis = rate_axis.twinx()
    share_axis.plot(
        labels, [100 * r["lock_wait_share"] for r in push + pull], "o-", color="tab:red"
    )
    share_axis.set_ylabel("% of active backend time waiting on locks", color="tab:red")
    share_axis.set_ylim(0, 100)
    rate_axis.set_title("Draining one backlog into one PostgreSQL (same run, same machine)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--per-message", type=int, default=25)
    parser.add_argument("--emulator", default="builtin")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="pushes per instance at once"
    )
    parser.add_argument("--limit", type=float, default=600.0, help="give up after (s)")
    parser.add_argument("--no-peer", action="store_true", help="skip the pull worker's run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/push_topology"))
    args = parser.parse_args()
    results = []
    with database_server() as server:
        args.server = server
        for instances in args.instances:
            results.append(await one_run(args.emulator, "push", instances, args))
            print(results[-1], flush=True)
        if not args.no_peer:
            results.append(await one_run(args.emulator, "pull", 1, args))
            print(results[-1], flush=True)
    write(results, args.out, " ".join(["benchmarks/push_throughput.py", *sys.argv[1:]]))


if __name__ == "__main__":
    asyncio.run(main())
