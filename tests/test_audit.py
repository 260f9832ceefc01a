"""`clickstream audit` against a real PostgreSQL (migrated schema, seeded rows) and bqemulator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from google.api_core.exceptions import BadRequest

from clickstream.audit import (
    IdsFileError,
    audit,
    bigquery_lookup,
    bigquery_skip_reason,
    postgres_lookup,
    read_ids,
    retry_while_busy,
)
from clickstream_contract.cli import main
from clickstream_contract.config import Settings
from processor.migrations import migrate

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def seed(url: str, in_events: list[uuid.UUID], bad_raws: list[bytes]) -> None:
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO event_ids (event_id, received_at) VALUES ($1, $2)",
            [(i, NOW) for i in in_events],
        )
        await conn.executemany(
            "INSERT INTO bad_events (received_at, reason, reason_class, raw) "
            "VALUES ($1, 'test', 'validation', $2)",
            [(NOW, raw) for raw in bad_raws],
        )
    finally:
        await conn.close()


def write_ids(path: Path, listed: list[uuid.UUID]) -> Path:
    path.write_text("".join(f"{i}\n" for i in listed))
    return path


async def test_counts_events_bad_events_missing_and_duplicates(
    fresh_database_url: str, tmp_path: Path
) -> None:
    stored, bad, missing = ids(7), ids(4), ids(2)
    await seed(
        fresh_database_url,
        stored,
        [
            f'{{"event_id": "{bad[0]}", "event_type": "Add To Cart"}}'.encode(),
            # Not UTF-8 and the id without hyphens: still found.
            b'\xff\xfe{"event_type":"x","event_id":"' + bad[1].hex.encode() + b'"}',
            # A whole refused batch: every id in it counts.
            f'{{"events": [{{"event_id": "{bad[2]}"}}, {{"event_id": "{bad[3]}"}}]}}'.encode(),
            f'{{"event_id": "{bad[0]}"}}'.encode(),  # the same bad event stored twice
            b"not json at all",
        ],
    )
    listed = [*stored, *bad, *missing, stored[0]]  # stored[0] listed twice
    path = write_ids(tmp_path / "ids.txt", listed)

    in_events, in_bad = await postgres_lookup(fresh_database_url, read_ids(path), chunk_size=3)
    assert in_events == set(stored)
    assert dict(in_bad) == {bad[0]: 2, bad[1]: 1, bad[2]: 1, bad[3]: 1}

    report = await audit(path, Settings(database_url=fresh_database_url), use_bigquery=False)
    assert report.missing_postgres == sorted(missing)
    assert report.file_duplicates == {stored[0]: 2}
    summary = report.summary()
    assert (summary["postgres_events"], summary["postgres_bad_events"]) == (7, 4)
    assert summary["postgres_bad_event_duplicates"] == 1
    assert not report.ok
    assert report.bigquery is None and report.bigquery_skipped == "--no-bigquery"


async def test_cli_exits_non_zero_only_when_something_is_missing(
    fresh_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stored = ids(3)
    await seed(fresh_database_url, stored, [])
    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    for name in ("BIGQUERY_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)

    complete = write_ids(tmp_path / "complete.txt", stored)
    # The CLI runs its own event loop: call it from a thread, away from the test's loop.
    assert await asyncio.to_thread(main, ["audit", str(complete)]) == 0
    out = capsys.readouterr().out
    assert "OK: every id accounted for" in out
    assert "BigQuery               skipped: neither BIGQUERY_EMULATOR_HOST" in out

    gone = uuid.uuid4()
    incomplete = write_ids(tmp_path / "incomplete.txt", [*stored, gone])
    assert await asyncio.to_thread(main, ["audit", str(incomplete)]) == 1
    out = capsys.readouterr().out
    assert str(gone) in out and "missing in PostgreSQL           1" in out


def test_a_malformed_ids_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(f"{uuid.uuid4()}\n\nnot-an-id\n")
    with pytest.raises(IdsFileError, match=r"ids.txt:3: not a UUID: 'not-an-id'"):
        read_ids(path)


def test_a_query_refused_as_busy_is_asked_again_and_any_other_error_raised_at_once() -> None:
    # bqemulator's answer while an append holds its DuckDB connection.
    busy = BadRequest(
        "Query execution failed: Resource In Use Error: connection is busy with another call"
    )
    calls: list[str] = []

    def refused(times: int, error: BadRequest) -> Callable[[], str]:
        def query() -> str:
            calls.append("query")
            if len(calls) <= times:
                raise error
            return "rows"

        return query

    assert retry_while_busy(refused(2, busy), delays=(0, 0, 0)) == "rows"
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(BadRequest, match="connection is busy"):
        retry_while_busy(refused(3, busy), delays=(0, 0))  # still busy once the delays are spent
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(BadRequest, match="Unrecognized name: evnt_id"):
        retry_while_busy(refused(1, BadRequest("Unrecognized name: evnt_id")), delays=(0, 0))
    assert len(calls) == 1


def test_bigquery_is_skipped_only_without_an_emulator_or_a_project() -> None:
    emulator = Settings(bigquery_emulator_host="http://127.0.0.1:9050")
    assert bigquery_skip_reason(emulator) is None
    assert bigquery_skip_reason(Settings(project="shop-prod")) is None
    reason = bigquery_skip_reason(Settings())
    assert reason is not None
    assert "BIGQUERY_EMULATOR_HOST" in reason and "GOOGLE_CLOUD_PROJECT" in reason


async def test_bigquery_found_missing_and_raw_duplicates(
    bigquery_emulator: dict[str, str],
) -> None:
    from processor.bigquery import create_sink
    from processor.records import EnrichedEvent

    settings = Settings(
        project="clickstream-test",
        bigquery_dataset=f"t_{uuid.uuid4().hex[:10]}",
        bigquery_emulator_host=bigquery_emulator["BIGQUERY_EMULATOR_HOST"],
        bigquery_storage_emulator_host=bigquery_emulator["BIGQUERY_STORAGE_EMULATOR_HOST"],
    )
    stored, missing = ids(4), ids(1)
    events = [
        EnrichedEvent(
            event_id=i,
            event_type="page_view",
            occurred_at=NOW,
            received_at=NOW,
            source="test",
            visitor_key="v",
            anonymous_id="v",
            user_id=None,
            session_id="s",
        )
        for i in stored
    ]
    sink = await create_sink(settings)
    try:
        await sink.write(events, [])
        await sink.write(events[:1], [])  # a redelivery appended again
    finally:
        await sink.close()
    result = bigquery_lookup(settings, [*stored, *missing])
    assert result.found == set(stored)
    assert result.raw_duplicates == {stored[0]: 2}
    assert result.view_duplicates == {}
