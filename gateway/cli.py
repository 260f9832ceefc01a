"""`clickstream gateway`: serve the ingestion API on Granian."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile

SERVER_LOG_LEVELS = ("debug", "info", "warning", "error")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the event ingestion gateway",
        description="Serve POST /v1/events and /v1/batch on Granian and publish to Pub/Sub. "
        "Configuration comes from the environment (see gateway/settings.py and "
        "clickstream_contract/config.py).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default %(default)s)"
    )
    parser.add_argument(
        "--server-log-level",
        choices=SERVER_LOG_LEVELS,
        default="info",
        help="the level of Granian's own lines (start, workers, shutdown; default %(default)s)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Set before anything imports prometheus_client: the workers inherit it and share the
    # directory, so /metrics adds up every worker's samples.
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    metrics_dir = tempfile.mkdtemp(prefix="clickstream-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return serve(args.host, args.port, args.workers, args.server_log_level)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve(host: str, port: int, workers: int, server_log_level: str = "info") -> int:
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    from clickstream_contract.config import Settings

    settings = Settings.from_env()
    if not settings.write_keys:
        raise SystemExit("CLICKSTREAM_WRITE_KEYS is empty: no client could send events")
    # RSGI (gateway.rsgi) answered ~15% more requests per core than Granian's ASGI interface,
    # and uvloop ~15% more than asyncio's loop, for the same app (benchmarks/README.md).
    server = Server(
        "gateway.rsgi:create_rsgi_app",
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=workers,
        factory=True,
        websockets=False,
        log_access=False,
        log_level=LogLevels(server_log_level),
    )
    server.serve()
    return 0
