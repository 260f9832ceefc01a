"""The `clickstream` command line: one subcommand per runnable part of the platform.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its subcommands
and sets `func` on them; imports of heavy dependencies stay inside the command functions so
`clickstream --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "clickstream.emulators.cli",
    "clickstream.stack",
    "gateway.cli",
    "processor.cli",
    "dashboard.cli",
    "clickstream.tools_cli",
    "clickstream.erase",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clickstream", description="Real-time e-commerce analytics platform."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
