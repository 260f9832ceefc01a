"""`clickstream function`: the processor's Cloud Function served locally, N instances on one port.

In Google Cloud, each instance of the function runs its archive's `main.py` (terraform/function/)
under functions-framework, whose gunicorn answers up to `processor_concurrency` pushes at once.
Here gunicorn's worker processes are the instances: N processes accepting on one listening
socket (the kernel spreads connections over them), each with its own event loop and asyncpg
pool, and the gunicorn master starts a new one when one dies. `clickstream up --processor push`
points the Pub/Sub push subscriptions at this endpoint.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

FUNCTION_SOURCE = Path(__file__).resolve().parent.parent / "terraform" / "function" / "main.py"
ENTRY_POINT = "process_pubsub"  # terraform/processor.tf's build_config.entry_point
# Pushes one instance handles at once: terraform's var.processor_concurrency default.
CONCURRENCY = 8
DEFAULT_INSTANCES = 2
DEFAULT_PORT = 8090
FUNCTION_COMMAND = (sys.executable, "-m", "clickstream_contract.cli", "function")


def function_command(
    host: str, port: int, instances: int, concurrency: int = CONCURRENCY
) -> tuple[list[str], dict[str, str]]:
    """The functions-framework command line and the environment it takes its sizes from."""
    argv = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(FUNCTION_SOURCE),
        "--target",
        ENTRY_POINT,
        "--signature-type",
        "cloudevent",
        "--host",
        host,
        "--port",
        str(port),
    ]
    return argv, {"WORKERS": str(instances), "THREADS": str(concurrency)}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "function",
        help="serve the processor's Cloud Function locally (N instances behind one port)",
        description="Run terraform/function/main.py's process_pubsub under functions-framework "
        "as Cloud Run does, with N instances (processes, each with its own PostgreSQL pool) "
        "accepting Pub/Sub pushes on one port. Environment as for `clickstream processor`.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="(default %(default)s)")
    parser.add_argument(
        "--instances", type=positive, default=DEFAULT_INSTANCES, help="(default %(default)s)"
    )
    parser.add_argument(
        "--concurrency",
        type=positive,
        default=CONCURRENCY,
        help="pushes one instance handles at once (default %(default)s, as deployed)",
    )
    parser.set_defaults(func=run_function)


def run_function(args: argparse.Namespace) -> int:
    argv, sizes = function_command(args.host, args.port, args.instances, args.concurrency)
    # Replaced by gunicorn's master: signals from a supervisor reach it directly.
    os.execve(argv[0], argv, {**os.environ, **sizes})
    return 0  # not reached


def start_function(
    env: Mapping[str, str],
    instances: int,
    log_path: Path,
    timeout: float = 60,
    concurrency: int = CONCURRENCY,
) -> tuple[subprocess.Popen[bytes], str]:
    """`clickstream function` as a child process on a free port (for tests and benchmarks);
    returns it and its URL once it accepts connections."""
    from clickstream.emulators.launch import free_port, stop_process

    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                *FUNCTION_COMMAND,
                *("--port", str(port), "--instances", str(instances)),
                *("--concurrency", str(concurrency)),
            ],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                raise RuntimeError(
                    f"clickstream function did not start: {log_path.read_text()}"
                ) from None
            time.sleep(0.1)
