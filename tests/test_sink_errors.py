"""Which sink errors set a message aside and which are retried: real PostgreSQL and bqemulator.

A message that a sink refuses for what it holds becomes a bad event with its reason, and the
other messages of its batch go through; an outage raises, so the whole batch is redelivered.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from processor_testing import aggregate_mismatches, envelope_of, event

from clickstream_contract import envelope
from clickstream_contract.config import Settings
from processor.bigquery import REQUEST_HEADROOM_BYTES, BigQuerySink, BigQueryWriteError, RowsRefused
from processor.bigquery_schema import bigquery_client, ensure_dataset
from processor.core import Message, Processor
from processor.migrations import migrate
from processor.postgres import PostgresSink, create_sink_pool


def message(events: list[dict], message_id: str) -> Message:
    return Message(message_id, envelope_of(events), envelope.attributes("events", len(events)))


@pytest.fixture
def settings(bigquery_emulator: dict[str, str], fresh_database_url: str) -> Settings:
    return Settings(
        project="clickstream-test",
        database_url=fresh_database_url,
        bigquery_dataset=f"t_{uuid.uuid4().hex[:10]}",
        bigquery_emulator_host=bigquery_emulator["BIGQUERY_EMULATOR_HOST"],
        bigquery_storage_emulator_host=bigquery_emulator["BIGQUERY_STORAGE_EMULATOR_HOST"],
    )


def create_tables(settings: Settings) -> None:
    client = bigquery_client(settings)
    try:
        ensure_dataset(client, settings.bigquery_dataset)
    finally:
        client.close()


async def test_a_row_bigquery_refuses_sets_its_message_aside_and_the_rest_go_through(
    settings: Settings,
) -> None:
    # Requests of at most 4 kB of rows: an event with a long title and many properties is a
    # row no request can carry, which no retry can change.
    create_tables(settings)
    bigquery = BigQuerySink(settings, max_request_bytes=REQUEST_HEADROOM_BYTES + 4_000)
    await migrate(settings.database_url)
    pool = await create_sink_pool(settings.database_url)
    huge = event(
        "page_view",
        page={"url": "https://shop.example/", "title": "t" * 500},
        properties={f"p{n}": "v" * 1000 for n in range(8)},
    )
    fine = [event("page_view"), event("search", anonymous_id="anon-2")]
    try:
        await Processor(PostgresSink(pool), [bigquery]).process(
            [message(fine[:1], "m-1"), message([huge], "m-huge"), message(fine[1:], "m-2")]
        )
        async with pool.acquire() as conn:
            bad = await conn.fetch("SELECT message_key, reason_class, reason FROM bad_events")
            # PostgreSQL committed the batch before BigQuery refused: the set-aside message's
            # events stay counted there; BigQuery holds only the others.
            assert await aggregate_mismatches(conn, [*fine, huge]) == {}
    finally:
        await pool.close()
        await bigquery.close()
    assert [(row["message_key"], row["reason_class"]) for row in bad] == [("m-huge", "processing")]
    assert (
        "RowsRefused" in bad[0]["reason"] and "more than one AppendRows request" in bad[0]["reason"]
    )
    client = bigquery_client(settings)
    try:
        rows = client.query(f"SELECT event_id FROM `{settings.bigquery_dataset}.events`").result()
        assert {str(row["event_id"]) for row in rows} == {e["event_id"] for e in fine}
    finally:
        client.close()


async def test_text_postgresql_cannot_store_sets_its_message_aside(settings: Settings) -> None:
    # NUL in the timeline's text (the sink's own check) and in a session's campaign (a
    # PostgreSQL data error): both messages set aside, the third goes through.
    await migrate(settings.database_url)
    pool = await create_sink_pool(settings.database_url)
    in_title = event("page_view", anonymous_id="a", page={"title": "a\u0000b"})
    in_url = event(
        "page_view", anonymous_id="b", page={"url": "https://shop.example/?utm_campaign=a%00"}
    )
    fine = [event("page_view", anonymous_id="c")]
    try:
        await Processor(PostgresSink(pool)).process(
            [message([in_title], "m-title"), message([in_url], "m-url"), message(fine, "m-fine")]
        )
        async with pool.acquire() as conn:
            bad = await conn.fetch("SELECT message_key, reason FROM bad_events ORDER BY 1")
            assert await aggregate_mismatches(conn, fine) == {}
    finally:
        await pool.close()
    assert [row["message_key"] for row in bad] == ["m-title", "m-url"]
    assert "NUL character" in bad[0]["reason"]
    assert "CharacterNotInRepertoireError" in bad[1]["reason"]


async def test_a_bigquery_outage_is_not_set_aside(settings: Settings) -> None:
    # The dataset does not exist: not the messages' fault, so the batch raises (and is
    # redelivered) instead of being stored as bad events.
    bigquery = BigQuerySink(settings, attempts=1)
    await migrate(settings.database_url)
    pool = await create_sink_pool(settings.database_url)
    try:
        with pytest.raises(BigQueryWriteError) as raised:
            await Processor(PostgresSink(pool), [bigquery]).process(
                [message([event("page_view")], "m-1"), message([event("search")], "m-2")]
            )
        assert not isinstance(raised.value, RowsRefused)
        conn: asyncpg.Connection
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM bad_events") == 0
    finally:
        await pool.close()
        await bigquery.close()
