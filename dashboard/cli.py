"""`clickstream dashboard`: serve the dashboard; `hash-password` and `seed` are its helpers."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dashboard.config import DashboardConfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = subparsers.add_parser(
        "dashboard",
        help="serve the BI dashboard (reads PostgreSQL at DATABASE_URL)",
        description="Serve the dashboard. Access control: CLICKSTREAM_DASHBOARD_PASSWORD_HASH, "
        "CLICKSTREAM_DASHBOARD_PASSWORD (local development) or "
        "CLICKSTREAM_DASHBOARD_IAP_AUDIENCE; CLICKSTREAM_DASHBOARD_SECRET signs session "
        "cookies (random per start when unset).",
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default %(default)s)"
    )
    dashboard.add_argument("--port", type=int, default=8050, help="port (default %(default)s)")
    dashboard.add_argument(
        "--server-log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="the level of Granian's own lines (start, workers, shutdown; default %(default)s)",
    )
    dashboard.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without any access control (local demo only)",
    )
    dashboard.set_defaults(func=run_serve)
    commands = dashboard.add_subparsers(dest="dashboard_command", metavar="COMMAND")

    hash_password = commands.add_parser(
        "hash-password",
        help="print a hash for CLICKSTREAM_DASHBOARD_PASSWORD_HASH",
        description="Read a password (prompt, or one line of standard input) and print its "
        "scrypt hash.",
    )
    hash_password.set_defaults(func=run_hash_password)

    seed = commands.add_parser(
        "seed",
        help="fill DATABASE_URL with a month of realistic demo data",
        description="Generate sessions and events over the last DAYS days in PostgreSQL and "
        "derive every aggregate from them, the way the processor would.",
    )
    seed.add_argument("--events", type=int, default=5_000_000, help="raw events (default 5M)")
    seed.add_argument("--days", type=int, default=30, help="days of history (default 30)")
    seed.add_argument("--reset", action="store_true", help="empty the processor's tables first")
    seed.add_argument("--random-seed", type=float, default=0.42, help="for repeatable data")
    seed.set_defaults(func=run_seed)


def run_serve(args: argparse.Namespace) -> int:
    from dashboard.config import ConfigError, DashboardConfig

    try:
        config = DashboardConfig.from_env(insecure_no_auth=args.insecure_no_auth)
    except (ConfigError, ValueError) as error:
        print(f"clickstream dashboard: {error}", file=sys.stderr)
        return 2
    if config.database_url is None:
        print("clickstream dashboard: DATABASE_URL is not set", file=sys.stderr)
        return 2
    if config.auth == "none":
        print("WARNING: the dashboard is serving WITHOUT access control", file=sys.stderr)
    asyncio.run(serve(config, args.host, args.port, args.server_log_level))
    return 0


async def serve(
    config: DashboardConfig, host: str, port: int, server_log_level: str = "info"
) -> None:
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    from dashboard.app import create_app

    # The embedded server runs the app object in this process: the config (and its random
    # per-start secret) is built once, not once per worker process.
    server = Server(
        create_app(config),
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        log_level=LogLevels(server_log_level),
    )
    # Granian warns on every start that its embedded mode is experimental: it is the mode this
    # dashboard is built and tested on, and the notice only crowds `clickstream up`'s console.
    logging.getLogger("_granian").addFilter(
        lambda record: record.getMessage() != "Embedded server is experimental!"
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stop)
    print(f"dashboard: http://{host}:{port}/ (auth: {config.auth})", flush=True)
    await server.serve()


def run_hash_password(args: argparse.Namespace) -> int:
    from dashboard.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("password: must be at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def run_seed(args: argparse.Namespace) -> int:
    from clickstream_contract.config import Settings
    from dashboard.seed import seed_database

    database_url = Settings.from_env().database_url
    if database_url is None:
        print("clickstream dashboard seed: DATABASE_URL is not set", file=sys.stderr)
        return 2
    summary = asyncio.run(
        seed_database(
            database_url,
            events=args.events,
            days=args.days,
            reset=args.reset,
            random_seed=args.random_seed,
            progress=lambda text: print(text, flush=True),
        )
    )
    print(summary)
    return 0
