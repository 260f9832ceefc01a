"""Shared by the dashboard's tests: migrated databases, a real `clickstream dashboard` server,
and a logged-in headless Chromium."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import asyncpg
import httpx
from conftest import with_database
from gateway_server import free_port

from clickstream.emulators.launch import stop_process
from processor.migrations import migrate

PASSWORD = "correct horse battery"


async def migrated_database(server_url: str) -> str:
    """A new database on the server with every migration applied; drop it with drop_database."""
    name = f"dash_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    await migrate(url)
    return url


async def drop_database(server_url: str, url: str) -> None:
    name = url.split("?")[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class DashboardProcess:
    url: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def dashboard_server(
    database_url: str, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[DashboardProcess]:
    """`clickstream dashboard` on a free loopback port, stopped (SIGTERM) on exit."""
    port = free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CLICKSTREAM_DASHBOARD_PASSWORD": PASSWORD,
        "CLICKSTREAM_DASHBOARD_POLL_SECONDS": "1",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "clickstream_contract.cli", "dashboard", "--port", str(port), *args],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"dashboard exited with {proc.returncode}: {stderr}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("dashboard did not become healthy in 30 s")
            time.sleep(0.1)
        yield DashboardProcess(url, proc)
    finally:
        stop_process(proc)
