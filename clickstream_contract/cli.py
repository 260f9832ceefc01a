"""The `clickstream` command: one subcommand per part of the platform that is installed.

Each part declares its commands as an entry point in the `clickstream.commands` group, naming a
`register(subparsers)` function that adds its subcommands and sets `func` on them. The gateway's
image therefore has `clickstream gateway`, the dashboard's VM `clickstream dashboard`, and a
development install every command. Imports of heavy dependencies stay inside the command
functions, so `clickstream --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

COMMANDS_GROUP = "clickstream.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clickstream", description="Real-time e-commerce analytics platform."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry_point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
        entry_point.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
