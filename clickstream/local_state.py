"""The running local stack's state folder (`.clickstream/`), for the tools that join it.

While `clickstream up` runs, `stack.json` in its state folder names what a part needs to reach
the stack (`DATABASE_URL`, the emulator hosts, the write keys...) and the supervisor's process
id; the supervisor removes it when it stops. Tools (loadgen, audit, erase, replay) read their
settings from `stack_env()`: the environment, with the running stack's variables filled in
where the environment does not set them, so an exported variable always wins and a file left
by a stack that was killed (its process gone) is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from clickstream_contract.config import LOCAL_PROJECT

STATE_DIR: Final = Path(".clickstream")
# Names another folder than ./.clickstream (as `clickstream up --state-dir` does).
STATE_DIR_ENV: Final = "CLICKSTREAM_STATE_DIR"
STACK_FILE: Final = "stack.json"


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(STATE_DIR_ENV) or STATE_DIR)


def write_stack_env(folder: Path, variables: Mapping[str, str]) -> Path:
    """Record the running stack's variables (owner-only: they hold the write key)."""
    path = folder / STACK_FILE
    path.touch(mode=0o600)
    path.write_text(json.dumps({"pid": os.getpid(), "env": dict(variables)}, indent=2))
    return path


def remove_stack_env(folder: Path) -> None:
    (folder / STACK_FILE).unlink(missing_ok=True)


def read_stack_env(folder: Path) -> dict[str, str]:
    """The variables of the stack running from `folder`; {} when none runs."""
    try:
        state = json.loads((folder / STACK_FILE).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):  # no file, unreadable, or stack gone
        return {}
    return {str(name): str(value) for name, value in dict(state["env"]).items()}


def stack_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`env`, with the running local stack's variables where `env` leaves them unset; the
    stack is left out when `env` names another Google Cloud project (work against GCP)."""
    merged = read_stack_env(state_dir(env))
    project = env.get("GOOGLE_CLOUD_PROJECT")
    if project and project != merged.get("GOOGLE_CLOUD_PROJECT", LOCAL_PROJECT):
        merged = {}
    merged.update({name: value for name, value in env.items() if value})
    return merged


def missing_setting(command: str, setting: str) -> SystemExit:
    """The one-line error of a tool that found `setting` neither set nor in a running stack."""
    return SystemExit(
        f"clickstream {command}: {setting} is not set, and no `clickstream up` runs with the "
        f"state folder {state_dir().resolve()}: set {setting}, or start ./dev up"
    )
