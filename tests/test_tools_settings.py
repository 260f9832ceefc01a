"""The newcomer's commands without a running stack: `clickstream up --help` explains every
option with its default, and a tool that finds a setting nowhere (no flag, no variable, no
stack in the state folder) says in one line what to set, never with a traceback. The same
tools against a running stack: tests/test_stack.py."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clickstream.local_state import STATE_DIR_ENV
from clickstream.stack import STACK_VARIABLES
from clickstream_contract.cli import build_parser


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found: argparse.ArgumentParser = subparsers.choices[name]
    return found


@pytest.mark.parametrize("command", ["up", "loadgen"])
def test_help_explains_every_option_and_its_default(command: str) -> None:
    for action in subcommand(command)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings}: no help"
        if action.default not in (None, False):
            assert "default" in action.help, f"{command} {action.option_strings}: no default"


def run_tool(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (*STACK_VARIABLES, STATE_DIR_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "clickstream_contract.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["audit", "ids.txt"], "DATABASE_URL"),
        (["erase", "--user-id", "u-1", "--dry-run"], "DATABASE_URL"),
        (["loadgen", "--count", "1"], "--url"),
        (["loadgen", "--count", "1", "--url", "http://127.0.0.1:9"], "--write-key"),
        (["env"], "CLICKSTREAM_STATE_DIR"),
    ],
)
def test_a_missing_setting_is_one_line_naming_it(
    tmp_path: Path, args: list[str], setting: str
) -> None:
    result = run_tool(args, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clickstream {args[0]}: ") and setting in line
    assert "./dev up" in line
