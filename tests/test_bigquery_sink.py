"""The BigQuery sink against the real bqemulator: tables, Storage Write appends, views.

One emulator per session (`bigquery_emulator`); each test works in a dataset of its own.
bqemulator validates far less than BigQuery, so refusals are tested where our code makes
them (tests/test_bigquery_rows.py) and here only where the emulator really answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import msgspec
import pytest
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import types

from clickstream.emulators.bigquery import start_in_subprocess
from clickstream.emulators.launch import stop_process
from clickstream_contract.config import Settings
from processor.bigquery import (
    BigQuerySink,
    BigQueryWriteError,
    append_request,
    create_sink,
    split_rows,
)
from processor.bigquery_rows import EVENT_ROWS
from processor.bigquery_schema import (
    BAD_EVENT_COLUMNS,
    CUSTOMER_DAILY_FIELDS,
    EVENT_COLUMNS,
    LEGACY_TYPE_NAMES,
    SchemaMismatchError,
    bigquery_client,
    ensure_dataset,
    refresh_customer_daily,
    schema_fields,
    schema_of,
)
from processor.records import BadEvent, EnrichedEvent


def emulator_settings(hosts: dict[str, str], dataset: str) -> Settings:
    return Settings(
        project="clickstream-test",
        bigquery_dataset=dataset,
        bigquery_emulator_host=hosts["BIGQUERY_EMULATOR_HOST"],
        bigquery_storage_emulator_host=hosts["BIGQUERY_STORAGE_EMULATOR_HOST"],
    )


@pytest.fixture
def settings(bigquery_emulator: dict[str, str]) -> Settings:
    return emulator_settings(bigquery_emulator, f"t_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def client(settings: Settings) -> Iterator[bigquery.Client]:
    client = bigquery_client(settings)
    yield client
    client.close()


def query(client: bigquery.Client, sql: str) -> list[dict[str, object]]:
    return [dict(row.items()) for row in client.query(sql).result()]


BASE = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)


def event(n: int, **changes: object) -> EnrichedEvent:
    made = EnrichedEvent(
        event_id=uuid.uuid5(uuid.NAMESPACE_OID, f"event-{n}"),
        event_type="page_view",
        occurred_at=BASE + timedelta(minutes=n),
        received_at=BASE + timedelta(minutes=n, microseconds=7),
        source="web",
        visitor_key=f"visitor-{n % 3}",
        anonymous_id=f"visitor-{n % 3}",
        user_id=None,
        session_id=f"session-{n % 3}",
        page_url=f"https://shop.example/p/{n}",
        page_path=f"/p/{n}",
    )
    return msgspec.structs.replace(made, **changes)


def purchase(n: int, visitor_key: str, revenue: str, **changes: object) -> EnrichedEvent:
    """A purchase in EUR as the PostgreSQL sink hands it on, converted into EUR."""
    return event(
        n,
        event_type="purchase",
        visitor_key=visitor_key,
        order_id=f"o-{n}",
        revenue=float(revenue),
        currency="EUR",
        revenue_reporting=Decimal(revenue),
        reporting_currency="EUR",
        **changes,
    )


def as_row(record: msgspec.Struct) -> dict[str, object]:
    row = msgspec.structs.asdict(record)
    if "event_id" in row:
        row["event_id"] = str(row["event_id"])
    return row


async def test_tables_are_created_with_schema_partitioning_and_clustering(
    settings: Settings, client: bigquery.Client
) -> None:
    sink = await create_sink(settings)
    await sink.close()
    await (await create_sink(settings)).close()  # a second start finds them and checks them

    def schema(table: bigquery.Table) -> list[tuple[str, str, str]]:
        return [
            (f.name, LEGACY_TYPE_NAMES.get(f.field_type, f.field_type), f.mode)
            for f in table.schema
        ]

    dataset = f"{settings.project}.{settings.bigquery_dataset}"
    events = client.get_table(f"{dataset}.events")
    assert schema(events) == [(c.name, c.type, c.mode) for c in EVENT_COLUMNS]
    assert events.time_partitioning.type_ == "DAY"
    assert events.time_partitioning.field == "occurred_at"
    assert events.clustering_fields == ["event_type", "user_id"]
    bad_events = client.get_table(f"{dataset}.bad_events")
    assert schema(bad_events) == [(c.name, c.type, c.mode) for c in BAD_EVENT_COLUMNS]
    assert client.get_table(f"{dataset}.events_dedup").table_type == "VIEW"
    customer_daily = client.get_table(f"{dataset}.customer_daily")
    assert customer_daily.table_type == "TABLE"
    assert customer_daily.time_partitioning.field == "day"
    assert client.get_table(f"{dataset}.customer_analytics").table_type == "VIEW"


async def test_rows_read_back_exactly(settings: Settings, client: bigquery.Client) -> None:
    events = [
        event(
            1,
            event_type="purchase",
            user_id="customer-1",
            visitor_key="customer-1",
            anonymous_id=None,
            page_title="Ünïcødé — 商品 🛒 עברית",
            referrer_class="search",
            device_type="mobile",
            is_bot=True,
            price=19.99,
            quantity=2,
            currency="EUR",
            order_id="order-1",
            revenue=39.98,
            revenue_reporting=Decimal("39.98"),
            reporting_currency="EUR",
            order_items='[{"product_id": "p1", "quantity": 2}]',
            properties='{"coupon": "ÉTÉ"}',
        ),
        # Every optional field None: NULLs, not empty strings or zeros.
        event(2, anonymous_id=None, page_url=None, page_path=None, visitor_key="v"),
        event(3, occurred_at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ]
    bad = [
        BadEvent(
            received_at=BASE,
            source=None,
            reason="envelope: not msgpack",
            reason_class="envelope",
            raw=b"\x00\xff\xfe not utf-8",
            message_key="m-1:0",
        )
    ]
    sink = await create_sink(settings)
    try:
        await sink.write(events, bad)
    finally:
        await sink.close()

    dataset = f"`{settings.project}.{settings.bigquery_dataset}`"
    got = query(client, f"SELECT * FROM {dataset}.events ORDER BY page_path NULLS FIRST")
    expected = sorted(
        (as_row(e) for e in events), key=lambda r: (r["page_path"] is not None, r["page_path"])
    )
    assert got == expected
    assert query(client, f"SELECT * FROM {dataset}.bad_events") == [as_row(bad[0])]


async def test_dedup_view_and_customer_rollups_ignore_a_duplicate_append(
    settings: Settings, client: bigquery.Client
) -> None:
    bought = purchase(10, "buyer", "25.50")
    first = [event(n, visitor_key="buyer", session_id="s-1") for n in range(4)] + [bought]
    # The same message delivered again (its rows appended twice), later than the first time.
    again = [
        msgspec.structs.replace(e, received_at=e.received_at + timedelta(hours=1)) for e in first
    ]
    sink = await create_sink(settings)
    try:
        await sink.write(first, [])
        await sink.write([*again, event(20, visitor_key="other")], [])
    finally:
        await sink.close()

    dataset = f"`{settings.project}.{settings.bigquery_dataset}`"
    assert query(client, f"SELECT COUNT(*) AS n FROM {dataset}.events") == [{"n": 11}]
    dedup = query(client, f"SELECT event_id, received_at FROM {dataset}.events_dedup")
    assert len(dedup) == 6
    assert {r["received_at"] for r in dedup if r["event_id"] == str(bought.event_id)} == {
        bought.received_at  # the first copy received wins
    }
    refresh_customer_daily(client, settings.bigquery_dataset, run_time=BASE + timedelta(days=1))
    buyer = query(client, f"SELECT * FROM {dataset}.customer_analytics WHERE visitor_key = 'buyer'")
    assert buyer == [
        {
            "visitor_key": "buyer",
            "user_id": None,
            "first_seen_at": BASE,
            "last_seen_at": bought.occurred_at,
            "events": 5,
            "sessions": 2,  # s-1 and the purchase's session-1
            "orders": 1,
            "lifetime_value": Decimal("25.50"),
            "reporting_currency": "EUR",
            "unconverted_orders": 0,
            "last_order_at": bought.occurred_at,
        }
    ]


async def test_customer_daily_refresh_replaces_only_the_recent_days(
    settings: Settings, client: bigquery.Client
) -> None:
    """The scheduled query's statement, run at chosen times: days before its window keep their
    rows whatever `events` holds; days inside it are recomputed (late events, redeliveries,
    erased events); a session across midnight counts once."""
    day = timedelta(days=1)
    old = event(1, visitor_key="ana", session_id="night", occurred_at=BASE - 3 * day)
    midnight = datetime(2024, 5, 17, tzinfo=UTC)
    across = [
        event(2, visitor_key="ana", session_id="late", occurred_at=midnight - timedelta(minutes=1)),
        event(3, visitor_key="ana", session_id="late", occurred_at=midnight + timedelta(minutes=1)),
    ]
    bought = purchase(4, "ana", "10.00")
    sink = await create_sink(settings)
    try:
        await sink.write([old, *across, bought, event(5, visitor_key="bo")], [])
        refresh_customer_daily(client, settings.bigquery_dataset, run_time=BASE, days=3)
        # Later: a late event for the day before the window, a redelivered purchase, and a
        # late event inside the window.
        late_old = event(6, visitor_key="ana", session_id="night", occurred_at=BASE - 3 * day)
        redelivered = msgspec.structs.replace(bought, received_at=BASE + day)
        late_recent = event(7, visitor_key="ana", session_id="late", occurred_at=midnight)
        await sink.write([late_old, redelivered, late_recent], [])
    finally:
        await sink.close()
    dataset = f"`{settings.project}.{settings.bigquery_dataset}`"
    # bo's only event is erased: its day is in the window, so its row goes too.
    client.query(f"DELETE FROM {dataset}.events WHERE visitor_key = 'bo'").result()
    for _ in range(2):  # a second run changes nothing; this window starts on May 16
        refresh_customer_daily(client, settings.bigquery_dataset, run_time=BASE, days=1)

    daily = query(
        client, f"SELECT visitor_key, day, events FROM {dataset}.customer_daily ORDER BY day"
    )
    assert daily == [
        {"visitor_key": "ana", "day": (BASE - 3 * day).date(), "events": 1},  # not recomputed
        {"visitor_key": "ana", "day": midnight.date() - day, "events": 1},
        {"visitor_key": "ana", "day": midnight.date(), "events": 3},
    ]
    (ana,) = query(client, f"SELECT * FROM {dataset}.customer_analytics")
    assert (ana["events"], ana["sessions"], ana["orders"], ana["lifetime_value"]) == (5, 3, 1, 10)
    assert ana["first_seen_at"] == old.occurred_at
    assert ana["last_order_at"] == bought.occurred_at
    # A run whose window reaches back that far picks the old late event up (a backfill).
    refresh_customer_daily(client, settings.bigquery_dataset, run_time=BASE, days=3)
    assert query(client, f"SELECT events FROM {dataset}.customer_analytics") == [{"events": 6}]


async def test_a_view_of_an_older_release_gets_the_current_query(
    settings: Settings, client: bigquery.Client
) -> None:
    """A local stack keeps its tables across releases: customer_analytics made when it was a
    view over events_dedup reads customer_daily after the next start."""
    await (await create_sink(settings)).close()
    dataset = f"{settings.project}.{settings.bigquery_dataset}"
    old = client.get_table(f"{dataset}.customer_analytics")
    old.view_query = f"SELECT visitor_key FROM `{dataset}.events_dedup` GROUP BY visitor_key"
    client.update_table(old, ["view_query"])
    await (await create_sink(settings)).close()
    # bqemulator 1.4.0 does not report a view's query: the columns it answers show which it is.
    result = client.query(f"SELECT * FROM `{dataset}.customer_analytics`").result()
    assert [field.name for field in result.schema] == [
        "visitor_key",
        "user_id",
        "first_seen_at",
        "last_seen_at",
        "events",
        "sessions",
        "orders",
        "lifetime_value",
        "reporting_currency",
        "unconverted_orders",
        "last_order_at",
    ]


async def test_tables_of_an_older_release_get_the_new_columns_and_a_rebuilt_customer_daily(
    settings: Settings, client: bigquery.Client
) -> None:
    """A dataset made before revenue was converted: `events` gets its new nullable columns in
    place (old rows read NULL), and a customer_daily of the older shape (revenue summed as sent)
    is rebuilt from every day of events on an emulator only; in a cloud project Terraform
    replaces it and the processor leaves it alone."""
    dataset = f"{settings.project}.{settings.bigquery_dataset}"
    client.create_dataset(dataset)
    new_columns = {"revenue_reporting", "reporting_currency"}
    older = [c for c in EVENT_COLUMNS if c.name not in new_columns]
    client.create_table(bigquery.Table(f"{dataset}.events", schema=schema_fields(tuple(older))))
    older_daily = [
        bigquery.SchemaField("revenue", "FLOAT64", mode="REQUIRED") if f.name == "revenue" else f
        for f in CUSTOMER_DAILY_FIELDS
        if f.name not in {"reporting_currency", "unconverted_order_ids"}
    ]
    client.create_table(bigquery.Table(f"{dataset}.customer_daily", schema=older_daily))
    long_ago = datetime.now(UTC) - timedelta(days=40)  # far before any refresh's window
    client.query(
        f"INSERT INTO `{dataset}.events` (event_id, event_type, occurred_at, received_at, source,"
        f" visitor_key, session_id, order_id, revenue, currency) VALUES ('e-1', 'purchase',"
        f" TIMESTAMP '{long_ago.isoformat()}', TIMESTAMP '{long_ago.isoformat()}', 'web', 'ana',"
        f" 's-1', 'o-1', 30.0, 'EUR')"
    ).result()

    # In a cloud project Terraform adds the columns: until it has, the processor says which.
    with pytest.raises(SchemaMismatchError, match="'revenue_reporting' is missing"):
        ensure_dataset(client, settings.bigquery_dataset)

    sink = await create_sink(settings)  # an emulator: a local stack's next start
    try:
        now = datetime.now(UTC)
        converted = purchase(2, "ana", "12.34", occurred_at=now)
        await sink.write([converted], [])
    finally:
        await sink.close()
    daily = client.get_table(f"{dataset}.customer_daily")
    assert schema_of(daily.schema) == schema_of(CUSTOMER_DAILY_FIELDS)
    assert daily.time_partitioning.field == "day"
    assert query(
        client,
        f"SELECT revenue_reporting, reporting_currency FROM `{dataset}.events`"
        " ORDER BY occurred_at",
    ) == [
        {"revenue_reporting": None, "reporting_currency": None},  # the older row
        {"revenue_reporting": Decimal("12.34"), "reporting_currency": "EUR"},
    ]
    # The old day is back, its order (never converted) counted apart, not summed as sent.
    assert query(
        client,
        f"SELECT day, revenue, unconverted_order_ids FROM `{dataset}.customer_daily`",
    ) == [{"day": long_ago.date(), "revenue": 0, "unconverted_order_ids": ["o-1"]}]


async def test_the_local_emulator_refreshes_customer_daily_by_itself(tmp_path: Path) -> None:
    """`clickstream up` has no BigQuery Data Transfer: its emulator runs the same refresh on a
    timer, so customer_analytics shows new events without anyone running the statement."""
    proc, hosts = start_in_subprocess(tmp_path / "emulator.log", customer_daily_every=0.5)
    try:
        # In the project the emulator refreshes: its default, from the environment as up's.
        project = Settings.from_env().project
        settings = dataclasses.replace(emulator_settings(hosts, "local"), project=project)
        sink = await create_sink(settings)
        try:
            now = datetime.now(UTC)
            await sink.write([event(n, visitor_key="ana", occurred_at=now) for n in range(3)], [])
        finally:
            await sink.close()
        client = bigquery_client(settings)
        deadline = time.monotonic() + 30
        found: list[dict[str, object]] = []
        while not found and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            found = query(
                client, f"SELECT visitor_key, events FROM `{project}.local.customer_analytics`"
            )
        client.close()
        assert found == [{"visitor_key": "ana", "events": 3}]
    finally:
        stop_process(proc)


async def test_appends_and_the_local_refresh_never_refuse_each_other(tmp_path: Path) -> None:
    """bqemulator has one DuckDB connection, which refuses a second caller instead of waiting:
    an append during the timer's customer_daily refresh failed ("connection is busy"), and so
    did the refresh during an append (seen: 1 append and 7 refreshes in 15 s of appends with a
    refresh every 0.3 s). The refresh now holds the appends' lock."""
    log = tmp_path / "emulator.log"
    proc, hosts = start_in_subprocess(log, customer_daily_every=0.2)
    try:
        project = Settings.from_env().project  # the project the emulator refreshes
        settings = dataclasses.replace(emulator_settings(hosts, "busy"), project=project)
        sink = await create_sink(settings)
        sink.attempts = 1  # a refused append raises at once
        stop = time.monotonic() + 8

        async def append_until_stop(writer: int) -> int:
            appended = 0
            while time.monotonic() < stop:
                now = datetime.now(UTC)
                rows = [event(writer * 10**6 + appended * 500 + n, occurred_at=now)
                        for n in range(500)]  # fmt: skip
                await sink.write(rows, [])
                appended += 1
            return appended

        try:
            appended = await asyncio.gather(*(append_until_stop(w) for w in range(4)))
        finally:
            await sink.close()
        client = bigquery_client(settings)
        try:  # the timer refreshed meanwhile: customer_analytics has the visitors
            found = query(client, f"SELECT count(*) AS n FROM `{project}.busy.customer_analytics`")
        finally:
            client.close()
        refreshes = log.read_text()
    finally:
        stop_process(proc)
    assert sum(appended) > 20
    assert found[0]["n"] > 0
    assert "customer_daily refresh failed" not in refreshes


async def test_a_batch_larger_than_one_request_is_appended_in_several(
    settings: Settings, client: bigquery.Client
) -> None:
    events = [event(n, properties='{"pad": "' + "x" * 400 + '"}') for n in range(1500)]
    await create_sink(settings)  # creates the tables
    # A 300 kB request cap: ~1 MB of rows must go as several requests on one connection.
    sink = BigQuerySink(settings, max_request_bytes=64 * 1024 + 300_000)
    assert len(split_rows(EVENT_ROWS.encode(events), sink.max_rows_bytes)) >= 3
    try:
        await sink.write(events, [])
    finally:
        await sink.close()
    dataset = f"`{settings.project}.{settings.bigquery_dataset}`"
    counts = query(
        client, f"SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM {dataset}.events"
    )
    assert counts == [{"n": 1500, "d": 1500}]


async def test_a_table_with_another_schema_is_refused_at_start(
    settings: Settings, client: bigquery.Client
) -> None:
    dataset = f"{settings.project}.{settings.bigquery_dataset}"
    client.create_dataset(dataset)
    client.create_table(
        bigquery.Table(
            f"{dataset}.events",
            schema=[
                bigquery.SchemaField("event_id", "STRING", mode="REQUIRED"),
                bigquery.SchemaField("occurred_at", "STRING"),
            ],
        )
    )
    with pytest.raises(
        SchemaMismatchError, match="column 'occurred_at' is STRING, expected TIMESTAMP"
    ):
        await create_sink(settings)


async def test_appending_to_a_missing_table_raises(settings: Settings) -> None:
    sink = BigQuerySink(settings)  # no create_sink: the dataset does not exist
    try:
        with pytest.raises(BigQueryWriteError, match="AppendRows into events") as error:
            await sink.write([event(1)], [])
        assert not error.value.transient
    finally:
        await sink.close()


async def test_an_unreachable_endpoint_is_retried_then_raised(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    nowhere = dataclasses.replace(
        settings, bigquery_storage_emulator_host=f"127.0.0.1:{closed_port}"
    )
    sink = BigQuerySink(nowhere, attempts=3, first_backoff_seconds=0.01)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="processor.bigquery"),
            pytest.raises(BigQueryWriteError) as error,
        ):
            await sink.write([event(1)], [])
    finally:
        await sink.close()
    assert error.value.transient
    assert [r.getMessage().rsplit(";", 1)[1].split(" in ")[0] for r in caplog.records] == [
        " retry 1",
        " retry 2",
    ]


async def test_the_emulator_keeps_no_copy_of_the_table_per_append(tmp_path: Path) -> None:
    """bqemulator 1.4.0 copies the whole table into a time-travel snapshot after every write
    (quadratic time and disk); our launcher keeps only snapshots a query asks for."""
    data = tmp_path / "data"
    proc, hosts = start_in_subprocess(tmp_path / "emulator.log", data_dir=data)
    try:
        sink = await create_sink(emulator_settings(hosts, "kept"))
        try:
            for batch in range(3):
                await sink.write([event(batch * 10 + n) for n in range(10)], [])
        finally:
            await sink.close()
    finally:
        stop_process(proc)
    # The emulator's own database, read once it has stopped.
    with duckdb.connect(str(data / "bqemulator.duckdb"), read_only=True) as db:
        schemas = dict(
            db.execute(
                "SELECT table_schema, count(*) FROM information_schema.tables GROUP BY 1"
            ).fetchall()
        )
        stored = db.execute('SELECT count(*) FROM "clickstream-test__kept"."events"').fetchone()
    assert stored == (30,)
    assert "_bqemulator_snapshots" not in schemas, schemas


async def test_the_emulator_appends_while_many_streams_are_open(settings: Settings) -> None:
    """Push instances and workers each hold AppendRows streams open while they write. With
    Python's default thread pool bqemulator 1.4.0 served 5 streams at once on 2 cores, and the
    next append waited for one of them to end (forever, were a stream's client to vanish
    unnoticed); our launcher gives it threads for many."""
    sink = await create_sink(settings)
    target = sink.events
    held_open = asyncio.Event()

    async def first_request_only() -> AsyncIterator[types.AppendRowsRequest]:
        yield append_request(target.stream, [], target.writer_schema)
        await held_open.wait()

    metadata = (("x-goog-request-params", f"write_stream={target.stream}"),)
    calls = [
        await sink.client.append_rows(requests=first_request_only(), metadata=metadata)
        for _ in range(12)
    ]
    try:
        for call in calls:  # each stream is open: its first request was answered
            await asyncio.wait_for(anext(aiter(call)), 30)
        rows = EVENT_ROWS.encode([event(1)])
        assert await asyncio.wait_for(sink.send(target, [rows]), 30) == (1, None)
    finally:
        for call in calls:
            call.cancel()
        await sink.close()
    client = bigquery_client(settings)
    try:
        found = query(client, f"SELECT event_id FROM `{settings.bigquery_dataset}.events`")
    finally:
        client.close()
    assert [row["event_id"] for row in found] == [str(event(1).event_id)]
