"""Run `clickstream emulator pubsub` as a child process: for tests, benchmarks and local stacks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

PUBSUB_COMMAND = (sys.executable, "-m", "clickstream_contract.cli", "emulator", "pubsub")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_pubsub_emulator(
    impl: str, log_path: Path, timeout: float = 60, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the emulator on a free port; return it and its host once it accepts gRPC.

    `env` is added to this process's environment (GOOGLE_CLOUD_PROJECT names the project
    whose topics and subscriptions the emulator creates)."""
    import grpc

    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*PUBSUB_COMMAND, "--impl", impl, "--port", str(port)],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(host) as channel:
        while True:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return proc, host
            except grpc.FutureTimeoutError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stop_process(proc)
                    raise RuntimeError(
                        f"Pub/Sub emulator ({impl}) did not start: {log_path.read_text()}"
                    ) from None


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the emulators stop cleanly on it), SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
