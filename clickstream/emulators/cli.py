"""`clickstream emulator <service>`: local endpoints that speak the real Google Cloud APIs.

Each emulator module registers itself into the `emulator` group through a function
`register_emulator(emulator_subparsers)`; add the module's name to `EMULATOR_MODULES`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os

EMULATOR_MODULES = ("clickstream.emulators.cli", "clickstream.emulators.bigquery")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    emulator = subparsers.add_parser("emulator", help="run a local Google Cloud service emulator")
    emulator_subparsers = emulator.add_subparsers(dest="emulator", required=True, metavar="SERVICE")
    for name in EMULATOR_MODULES:
        importlib.import_module(name).register_emulator(emulator_subparsers)


def register_emulator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pubsub = subparsers.add_parser(
        "pubsub",
        help="Cloud Pub/Sub emulator (Google's when installed, else the built-in one)",
        description="Serve the Cloud Pub/Sub gRPC API locally and print PUBSUB_EMULATOR_HOST.",
    )
    pubsub.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    pubsub.add_argument("--port", type=int, default=8085, help="port (default %(default)s)")
    pubsub.add_argument(
        "--impl",
        choices=("auto", "google", "builtin"),
        default="auto",
        help="auto: Google's emulator when installed, otherwise the built-in one",
    )
    pubsub.add_argument(
        "--no-topology",
        action="store_true",
        help="do not create the platform's topics and subscriptions (by default they are created "
        "once the emulator listens, in GOOGLE_CLOUD_PROJECT, else clickstream-local; the "
        "services themselves never create them)",
    )
    pubsub.set_defaults(func=run_pubsub)


async def create_topology(endpoint: str) -> None:
    """The platform's topics and subscriptions on the emulator at `endpoint`, as Terraform
    creates them in Google Cloud."""
    from clickstream.pubsub_admin import ensure_topology
    from clickstream_contract.config import Settings

    settings = Settings.from_env({**os.environ, "PUBSUB_EMULATOR_HOST": endpoint})
    await ensure_topology(settings)
    print(f"created the topics and subscriptions of project {settings.project}", flush=True)


def run_pubsub(args: argparse.Namespace) -> int:
    from clickstream.emulators import google_pubsub

    impl = args.impl
    binary = google_pubsub.find_emulator() if impl in ("auto", "google") else None
    if impl == "google" and binary is None:
        raise SystemExit(
            "Google's Pub/Sub emulator is not installed "
            "(gcloud components install pubsub-emulator, or the Debian package "
            "google-cloud-cli-pubsub-emulator); use --impl builtin"
        )
    topology = None if args.no_topology else create_topology
    if binary is not None:
        on_listening = None if topology is None else lambda e: asyncio.run(topology(e))
        return google_pubsub.run(binary, args.host, args.port, on_listening)
    from clickstream.emulators.pubsub_server import run

    return run(args.host, args.port, topology)
