"""`clickstream loadgen`, `audit` and `env`: drive the platform, check what it kept, join it.

Each reads its settings from flags, then the environment, then the local stack running from the
state folder (clickstream.local_state), so against `./dev up` none needs an exported variable.
A setting found nowhere is a one-line error that names what to set.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from clickstream.loadgen_options import Options
from clickstream.local_state import missing_setting, read_stack_env, stack_env, state_dir


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    loadgen = subparsers.add_parser(
        "loadgen",
        help="simulate shoppers and send their events to a gateway",
        description="Simulate shoppers (catalog, sessions, carts, purchases, campaigns, devices) "
        "and send their events to the gateway. Progress on stderr, summary on stdout.",
    )
    loadgen.add_argument(
        "--url",
        help="gateway base URL (default: CLICKSTREAM_GATEWAY_URL, else the local stack's)",
    )
    loadgen.add_argument(
        "--write-key",
        help="write key (default: the first of CLICKSTREAM_WRITE_KEYS, else the local stack's)",
    )
    loadgen.add_argument(
        "--rate",
        type=float,
        help="events per second, open loop (default: as fast as --concurrency allows)",
    )
    stop = loadgen.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="seconds to run")
    stop.add_argument("--count", type=int, help="events to send")
    loadgen.add_argument(
        "--batch-size",
        type=int,
        default=Options.batch_size,
        help="events per request: 1 posts /v1/events, more post /v1/batch (default: %(default)s)",
    )
    loadgen.add_argument(
        "--concurrency",
        type=int,
        default=Options.concurrency,
        help="requests in flight (default: %(default)s)",
    )
    loadgen.add_argument(
        "--ids-file", type=Path, help="write the event_id of every accepted event, one per line"
    )
    loadgen.add_argument("--seed", type=int, help="seed of the simulation (shops, sessions)")
    loadgen.add_argument(
        "--invalid-share",
        type=float,
        default=Options.invalid_share,
        help="share of deliberately invalid events, e.g. 0.02 (default: %(default)s)",
    )
    loadgen.add_argument("--gzip", action="store_true", help="gzip request bodies over 1 KB")
    loadgen.add_argument("--json", action="store_true", help="print the summary as JSON")
    loadgen.add_argument("--quiet", action="store_true", help="no progress line")
    loadgen.set_defaults(func=run_loadgen)

    audit = subparsers.add_parser(
        "audit",
        help="count a loadgen ids file in PostgreSQL, bad_events and BigQuery",
        description="Look up every id of FILE (clickstream loadgen --ids-file) in PostgreSQL's "
        "event_ids (the processor's dedup keys) and bad_events (DATABASE_URL) and "
        "BigQuery's events_dedup view "
        "(BIGQUERY_EMULATOR_HOST or GOOGLE_CLOUD_PROJECT; skipped when neither is set). "
        "Unset variables come from the local stack when one runs. "
        "Exits 1 when an id is missing or duplicated.",
    )
    audit.add_argument("file", type=Path, help="ids file, one event_id per line")
    audit.add_argument("--no-bigquery", action="store_true", help="check PostgreSQL only")
    audit.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.set_defaults(func=run_audit)

    env = subparsers.add_parser(
        "env",
        help="print the running local stack's variables as shell `export` lines",
        description="Print `export` lines for every variable a part (gateway, processor, "
        "dashboard, tools) needs to join the stack `clickstream up` runs from the state folder "
        '(CLICKSTREAM_STATE_DIR, else ./.clickstream). Use: eval "$(clickstream env)". '
        "Secrets are read from their files by the shell, not printed.",
    )
    env.set_defaults(func=run_env)


def run_loadgen(args: argparse.Namespace) -> int:
    import asyncio

    from clickstream.loadgen import generate
    from clickstream_contract.config import parse_write_keys

    env = stack_env()
    url = args.url or env.get("CLICKSTREAM_GATEWAY_URL")
    if not url:
        raise missing_setting("loadgen", "--url (or CLICKSTREAM_GATEWAY_URL)")
    try:
        keys = parse_write_keys(env.get("CLICKSTREAM_WRITE_KEYS", ""))
    except ValueError as error:
        raise SystemExit(f"clickstream loadgen: {error}") from None
    write_key = args.write_key or next(iter(keys), None)
    if not write_key:
        raise missing_setting("loadgen", "--write-key (or CLICKSTREAM_WRITE_KEYS)")
    try:
        options = Options(
            url=url,
            write_key=write_key,
            rate=args.rate,
            duration=args.duration,
            count=args.count,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            ids_file=args.ids_file,
            seed=args.seed,
            invalid_share=args.invalid_share,
            gzip=args.gzip,
        )
    except ValueError as error:
        raise SystemExit(f"clickstream loadgen: {error}") from None
    tally = asyncio.run(generate(options, progress=None if args.quiet else sys.stderr))
    summary = tally.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['events_sent']:,} events in {summary['requests']:,} requests over "
            f"{summary['seconds']:.1f}s ({summary['events_per_second']:,.0f} events/s): "
            f"{summary['accepted']:,} accepted, {summary['rejected']:,} rejected "
            f"({summary['invalid_sent']:,} sent invalid on purpose), {summary['failed']:,} "
            f"failed, {summary['retries']:,} retries; latency p50 "
            f"{summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms; "
            f"statuses {summary['statuses']}"
        )
        for reason, n in summary["errors"].items():
            print(f"  {n} x {reason}")
    if tally.aborted:
        print(f"clickstream loadgen: stopped: {tally.aborted}", file=sys.stderr)
    return 1 if tally.failed or tally.aborted else 0


def run_audit(args: argparse.Namespace) -> int:
    import asyncio

    from clickstream.audit import IdsFileError, audit
    from clickstream_contract.config import Settings

    settings = Settings.from_env(stack_env())
    if settings.database_url is None:
        raise missing_setting("audit", "DATABASE_URL")
    try:
        report = asyncio.run(audit(args.file, settings, use_bigquery=not args.no_bigquery))
    except (IdsFileError, OSError) as error:
        raise SystemExit(f"clickstream audit: {error}") from None
    print(json.dumps(report.summary(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


def run_env(args: argparse.Namespace) -> int:
    folder = state_dir().resolve()
    variables = read_stack_env(folder)
    if not variables:
        raise SystemExit(
            f"clickstream env: no `clickstream up` runs with the state folder {folder} "
            "(start ./dev up, or set CLICKSTREAM_STATE_DIR to its --state-dir)"
        )
    for name, value in {"CLICKSTREAM_STATE_DIR": str(folder), **variables}.items():
        print(f"export {name}={shlex.quote(value)}")
    # The dashboard's password stays in its file: the shell reads it when it runs the line.
    password = shlex.quote(str(folder / "dashboard-password"))
    print(f'export CLICKSTREAM_DASHBOARD_PASSWORD="$(cat {password})"')
    return 0
