"""What a `clickstream up` killed outright (SIGKILL, a closed terminal) leaves behind.

The kernel kills the supervisor's children when it dies (parent-death signal), but not what
those children started themselves: a Granian worker of the gateway outlives its killed parent
and keeps the gateway's port. Every child therefore carries `MARKER` (the state folder's
absolute path) in its environment, which its own children inherit, and the next `up` in that
folder stops every process still carrying it before it starts anything. (The embedded
PostgreSQL is adopted instead: see clickstream.local_postgres.)

Only one `up` may use a state folder at a time: it holds an exclusive lock on `up.lock` there
for its whole life, which the kernel releases however it ends. Leftovers are only looked for
once that lock is held, so a running stack's processes are never taken for leftovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path
from typing import IO, Final

MARKER: Final = "CLICKSTREAM_STACK"
LOCK_FILE: Final = "up.lock"


class StateDirBusy(RuntimeError):
    pass


def claim_state_dir(folder: Path) -> IO[bytes]:
    """Lock `folder` for this process; keep the returned file open while the stack runs."""
    lock = (folder / LOCK_FILE).open("a+b")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StateDirBusy(
            f"another `clickstream up` is running with the state folder {folder}: stop it "
            "first, or give this one --state-dir of its own"
        ) from None
    return lock


def marked_processes(folder: Path) -> list[int]:
    """Process ids whose environment carries `MARKER` for `folder` (this process excluded)."""
    wanted = f"{MARKER}={folder.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def stop_leftovers(folder: Path, grace_s: float = 5.0) -> list[int]:
    """SIGTERM the leftovers of an earlier run in `folder`, SIGKILL those still there after
    `grace_s`; returns the process ids found. Call with the folder claimed."""
    pids = marked_processes(folder)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (alive := set(marked_processes(folder)) & set(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
