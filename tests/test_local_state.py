"""The running local stack's state folder: tools fill in its variables, never over theirs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from clickstream.local_state import (
    STACK_FILE,
    read_stack_env,
    remove_stack_env,
    stack_env,
    write_stack_env,
)

STACK = {"DATABASE_URL": "postgresql://stack/db", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}


def test_the_running_stack_fills_in_what_the_environment_leaves_unset(tmp_path: Path) -> None:
    path = write_stack_env(tmp_path, STACK)
    assert path.stat().st_mode & 0o077 == 0
    env = {"CLICKSTREAM_STATE_DIR": str(tmp_path), "DATABASE_URL": "postgresql://mine/db"}
    merged = stack_env(env)
    assert merged["DATABASE_URL"] == "postgresql://mine/db"
    assert merged["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:8085"
    # Another Google Cloud project means GCP, not the local stack.
    gcp = stack_env({**env, "GOOGLE_CLOUD_PROJECT": "shop-prod"})
    assert "PUBSUB_EMULATOR_HOST" not in gcp
    remove_stack_env(tmp_path)
    assert read_stack_env(tmp_path) == {}


def test_a_file_left_by_a_killed_stack_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / STACK_FILE).write_text(json.dumps({"pid": gone.pid, "env": STACK}))
    assert read_stack_env(tmp_path) == {}
    (tmp_path / STACK_FILE).write_text("not json")
    assert read_stack_env(tmp_path) == {}
