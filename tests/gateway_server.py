"""Run `clickstream gateway` as a real Granian server for tests, and read back what it published."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from clickstream.pubsub_admin import ensure_topology, subscriber_async_client
from clickstream_contract import envelope
from clickstream_contract.config import Settings

GATEWAY_COMMAND = (sys.executable, "-m", "clickstream_contract.cli", "gateway")
WRITE_KEYS = "test-key=web,other-key=backend,rotated-key=web"


def create_topology(settings: Settings) -> None:
    """Topics and subscriptions, as `clickstream up` creates them first: services never do.

    Runs in a thread of its own, so that async tests (with a running loop) may call it too.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, ensure_topology(settings)).result()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayProcess:
    url: str
    proc: subprocess.Popen[bytes]
    settings: Settings
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_gateway(
    emulator_host: str,
    project: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
) -> Iterator[GatewayProcess]:
    """`clickstream gateway` on a free port against the emulator; SIGTERM (and wait) at exit."""
    port = free_port()
    full_env = {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": project,
        "CLICKSTREAM_WRITE_KEYS": WRITE_KEYS,
        **(env or {}),
    }
    settings = Settings.from_env(full_env)
    create_topology(settings)
    log_path = log_dir / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*GATEWAY_COMMAND, "--port", str(port), "--workers", str(workers)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", proc, settings, log_path)
    try:
        wait_ready(gateway)
        yield gateway
    finally:
        stop(proc)


def wait_ready(gateway: GatewayProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {gateway.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{gateway.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gateway not ready: {gateway.log()}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def event(**fields: Any) -> dict[str, Any]:
    """A valid page_view event with a fresh id; `fields` override or add."""
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "occurred_at": datetime.now(UTC).isoformat(),
        "anonymous_id": "anon-1",
        "page": {"url": "https://shop.example.com/"},
    }
    base.update(fields)
    return base


@dataclass
class Pulled:
    attributes: dict[str, str]
    envelope: envelope.Envelope


async def pull(
    settings: Settings, subscription: str, *, events: int, wait_s: float = 20
) -> list[Pulled]:
    """Pull (and ack) messages until they hold `events` events, then briefly check for more."""
    client = subscriber_async_client(settings)
    path = settings.subscription_path(subscription)
    pulled: list[Pulled] = []
    count = 0
    deadline = time.monotonic() + wait_s
    try:
        # Keep pulling a little past the expected count so extra events would be seen.
        quiet_until = None
        while time.monotonic() < deadline:
            response = await client.pull(
                subscription=path, max_messages=1000, return_immediately=True, timeout=10
            )
            messages = response.received_messages
            if messages:
                await client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in messages])
                for received in messages:
                    attrs = dict(received.message.attributes)
                    env = envelope.decode(received.message.data, attrs)
                    pulled.append(Pulled(attrs, env))
                    count += env.event_count
            if count >= events:
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() >= quiet_until:
                    break
            if not messages:
                await asyncio.sleep(0.05)
    finally:
        await client.transport.close()
    return pulled


def published_events(pulled: list[Pulled]) -> list[bytes]:
    return [e for p in pulled for group in p.envelope.groups for e in group.events]
