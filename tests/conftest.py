"""Fixtures for real servers: PostgreSQL here; Pub/Sub and BigQuery endpoints in their modules.

PostgreSQL: `DATABASE_URL` when set, otherwise a throwaway server from the `pgserver` package.
Each test that writes gets its own database (`fresh_database_url`), so tests never share rows.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from clickstream.emulators.launch import start_pubsub_emulator, stop_process
from clickstream.local_postgres import postgres_url
from processor.core import Processor
from processor.migrations import migrate
from processor.postgres import PostgresSink, create_sink_pool


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with postgres_url() as url:
        yield url


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def fresh_database_url(database_url: str) -> object:
    """A new, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(database_url, name)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# Pub/Sub: one emulator per session, started through the real command line.
# CLICKSTREAM_TEST_PUBSUB=google selects Google's emulator; the default is the built-in one.
# Nothing global is set: tests pass the host to clients or set PUBSUB_EMULATOR_HOST themselves
# (monkeypatch), and use `pubsub_project` / `unique_name` so they never share topics.


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """`pubsub_emulator("builtin" | "google")` -> host; one process per kind per session."""
    running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def get(impl: str) -> str:
        if impl not in running:
            log_path = tmp_path_factory.mktemp("pubsub") / f"emulator-{impl}.log"
            running[impl] = start_pubsub_emulator(impl, log_path)
        return running[impl][1]

    try:
        yield get
    finally:
        for proc, _ in running.values():
            stop_process(proc)


@pytest.fixture(scope="session")
def pubsub_emulator_host(pubsub_emulator: Callable[[str], str]) -> str:
    """ "127.0.0.1:PORT" of a Pub/Sub emulator that lives for the whole session."""
    return pubsub_emulator(os.environ.get("CLICKSTREAM_TEST_PUBSUB", "builtin"))


@pytest.fixture
def any_pubsub_emulator_host(request: pytest.FixtureRequest, pubsub_emulator_host: str) -> str:
    """The session's Pub/Sub emulator, or the kind a test names:
    `@pytest.mark.parametrize("any_pubsub_emulator_host", ["google"], indirect=True)`."""
    kind = getattr(request, "param", None)
    if kind is None:
        return pubsub_emulator_host
    emulator: Callable[[str], str] = request.getfixturevalue("pubsub_emulator")
    return emulator(kind)


@pytest.fixture
def pubsub_project() -> str:
    """A project id of its own, so a test's topics and subscriptions never meet another's."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """`unique_name("events")` -> "events-3f9a...": a topic/subscription name nobody else uses."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


# BigQuery: one bqemulator per session, started through the real command line on free ports
# (port 0; it prints the ones it bound). Tests use their own dataset names to stay apart. Fault
# injection (tests/test_faults.py) starts one per test instead (`own_bigquery_emulator`).


@contextlib.contextmanager
def running_bigquery_emulator(log_path: Path) -> Iterator[dict[str, str]]:
    """{"BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:P", "BIGQUERY_STORAGE_EMULATOR_HOST": ...}"""
    from clickstream.emulators.bigquery import start_in_subprocess

    proc, hosts = start_in_subprocess(log_path)
    try:
        yield hosts
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with running_bigquery_emulator(tmp_path_factory.mktemp("bigquery") / "emulator.log") as hosts:
        yield hosts


@pytest.fixture
def own_bigquery_emulator(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An emulator for one test alone, for tests that cut its connections or kill its clients
    mid-append. bqemulator 1.4.0 once stopped answering appends after such a test (its few
    stream threads held, `APPEND_THREADS` in clickstream/emulators/bigquery.py), and every
    later test of the session that appended timed out: whatever a fault test breaks stays
    with it."""
    with running_bigquery_emulator(tmp_path / "bigquery-emulator.log") as hosts:
        yield hosts


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The processor's sink pool on a fresh, migrated database."""
    await migrate(fresh_database_url)
    pool = await create_sink_pool(fresh_database_url)
    yield pool
    await pool.close()


@pytest.fixture
def processor(pool: asyncpg.Pool) -> Processor:
    """The processing core over the PostgreSQL sink alone."""
    return Processor(PostgresSink(pool))
