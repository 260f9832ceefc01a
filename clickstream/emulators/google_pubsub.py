"""Find and run Google's own Cloud Pub/Sub emulator (a Java program shipped with gcloud)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

RELATIVE_BINARY = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
# Where gcloud's Debian package and the tarball installer put the SDK.
WELL_KNOWN_SDK_ROOTS = (
    Path("/usr/lib/google-cloud-sdk"),
    Path("/usr/share/google-cloud-sdk"),
    Path.home() / "google-cloud-sdk",
)
PR_SET_PDEATHSIG = 1


def sdk_roots() -> list[Path]:
    roots: list[Path] = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if out:
            roots.append(Path(out))
    roots.extend(WELL_KNOWN_SDK_ROOTS)
    return roots


def find_emulator() -> Path | None:
    """Google's emulator launcher, or None when it (or the java it needs) is missing."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return None
    for root in sdk_roots():
        candidate = root / RELATIVE_BINARY
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def die_with_parent() -> None:
    # Runs in the child before exec: if this wrapper is killed outright, the JVM goes too.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until_listening(proc: subprocess.Popen[bytes], host: str, port: int) -> bool:
    while proc.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def run(
    binary: Path, host: str, port: int, on_listening: Callable[[str], None] | None = None
) -> int:
    """Run the emulator in its own process group until it exits or we get SIGINT/SIGTERM;
    `on_listening(host:port)` runs once it accepts connections."""
    proc = subprocess.Popen(
        [str(binary), f"--host={host}", f"--port={port}"],
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        if wait_until_listening(proc, host, port):
            print(f"PUBSUB_EMULATOR_HOST={host}:{port}  (Google's emulator: {binary})", flush=True)
            if on_listening is not None:
                on_listening(f"{host}:{port}")
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            code = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return 0 if stopping else code
