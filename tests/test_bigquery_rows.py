"""BigQuery schema derivation, protobuf rows, request splitting and the answers to appends:
in-process, no server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import types

from processor.bigquery import (
    MAX_REQUEST_BYTES,
    REQUEST_HEADROOM_BYTES,
    RowsRefused,
    append_request,
    response_error,
    split_rows,
)
from processor.bigquery_rows import BAD_EVENT_ROWS, EVENT_ROWS, RowEncodingError
from processor.bigquery_schema import (
    EVENT_COLUMNS,
    SchemaMismatchError,
    check_schema,
    schema_fields,
)
from processor.records import BadEvent, EnrichedEvent


def make_event(**changes: object) -> EnrichedEvent:
    moment = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)
    event = EnrichedEvent(
        event_id=uuid.UUID("7d6b5c2e-0f7e-4c1a-9e55-3b1f0f6f8a01"),
        event_type="purchase",
        occurred_at=moment,
        received_at=moment + timedelta(seconds=2),
        source="web",
        visitor_key="customer-1",
        anonymous_id="anon-1",
        user_id="customer-1",
        session_id="session-1",
        page_title="Ünïcødé — 商品 🛒",
        price=19.99,
        quantity=2,
        revenue=39.98,
        order_id="order-1",
        is_bot=True,
        order_items='[{"product_id": "p1", "quantity": 2}]',
    )
    return msgspec.structs.replace(event, **changes)


def test_columns_follow_the_record_types_and_optionality() -> None:
    by_name = {column.name: column for column in EVENT_COLUMNS}
    assert [c.name for c in EVENT_COLUMNS] == list(EnrichedEvent.__struct_fields__)
    assert (by_name["event_id"].type, by_name["event_id"].mode) == ("STRING", "REQUIRED")
    assert (by_name["occurred_at"].type, by_name["occurred_at"].mode) == ("TIMESTAMP", "REQUIRED")
    assert (by_name["price"].type, by_name["price"].mode) == ("FLOAT64", "NULLABLE")
    assert (by_name["quantity"].type, by_name["quantity"].mode) == ("INT64", "NULLABLE")
    assert (by_name["is_bot"].type, by_name["is_bot"].mode) == ("BOOL", "REQUIRED")
    assert by_name["order_items"].type == "STRING"
    revenue_reporting = by_name["revenue_reporting"]
    assert (revenue_reporting.type, revenue_reporting.mode) == ("NUMERIC", "NULLABLE")
    raw = next(c for c in BAD_EVENT_ROWS.columns if c.name == "raw")
    assert (raw.type, raw.mode) == ("BYTES", "REQUIRED")


def test_rows_decode_through_the_descriptor_to_the_record_values() -> None:
    event = make_event(
        received_at=datetime(2024, 5, 17, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    )
    (encoded,) = EVENT_ROWS.encode([event])
    row = EVENT_ROWS.message.FromString(encoded)
    assert row.event_id == str(event.event_id)
    assert row.occurred_at == 1715938215123456  # 2024-05-17T09:30:15.123456Z in microseconds
    assert row.received_at == 1715936400000000  # 11:00 at +02:00 is 09:00Z
    assert row.page_title == event.page_title
    assert (row.price, row.quantity, row.is_bot) == (19.99, 2, True)
    # proto2 presence: a None field is absent, which BigQuery stores as NULL.
    assert not row.HasField("page_url")
    assert row.HasField("page_title")
    assert not row.HasField("revenue_reporting")


@pytest.mark.parametrize(
    ("amount", "text"),
    [(Decimal("39.98"), "39.98"), (Decimal("1E+2"), "100"), (Decimal("0E-9"), "0.000000000")],
)
def test_a_converted_amount_travels_as_exact_fixed_point_text(amount: Decimal, text: str) -> None:
    (encoded,) = EVENT_ROWS.encode([make_event(revenue_reporting=amount)])
    assert EVENT_ROWS.message.FromString(encoded).revenue_reporting == text


def test_bad_event_rows_keep_raw_bytes() -> None:
    bad = BadEvent(
        received_at=datetime(2024, 1, 1, tzinfo=UTC),
        source=None,
        reason="envelope: not msgpack",
        reason_class="envelope",
        raw=b"\x00\xff\xfe",
    )
    row = BAD_EVENT_ROWS.message.FromString(BAD_EVENT_ROWS.encode([bad])[0])
    assert row.raw == b"\x00\xff\xfe"
    assert not row.HasField("source")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"session_id": None}, "row 1: session_id is required (STRING) but is None"),
        ({"occurred_at": datetime(2024, 1, 1)}, "row 1: occurred_at (TIMESTAMP) cannot hold"),
        ({"quantity": "two"}, "row 1: quantity (INT64) cannot hold 'two'"),
        ({"event_id": 42}, "row 1: event_id (STRING) cannot hold 42: expected a UUID, got int"),
        ({"quantity": 2**64}, "row 1: quantity (INT64) cannot hold"),
        ({"page_title": "\ud800"}, "row 1: page_title (STRING) cannot hold"),
        (
            {"revenue_reporting": 39.98},
            "row 1: revenue_reporting (NUMERIC) cannot hold 39.98: expected a Decimal, got float",
        ),
        ({"revenue_reporting": Decimal("NaN")}, "row 1: revenue_reporting (NUMERIC) cannot hold"),
    ],
)
def test_a_value_a_column_cannot_hold_is_named(changes: dict[str, object], message: str) -> None:
    with pytest.raises(
        RowEncodingError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        EVENT_ROWS.encode([make_event(), make_event(**changes)])


def test_schema_check_names_each_disagreement() -> None:
    fields = schema_fields(EVENT_COLUMNS)
    drifted = [
        bigquery.SchemaField("quantity", "STRING") if f.name == "quantity" else f
        for f in fields
        if f.name != "revenue"
    ]
    drifted.append(bigquery.SchemaField("tenant", "STRING", mode="REQUIRED"))
    drifted = [
        bigquery.SchemaField("page_url", "STRING", mode="REQUIRED") if f.name == "page_url" else f
        for f in drifted
    ]
    with pytest.raises(SchemaMismatchError) as error:
        check_schema(bigquery.Table("p.d.events", schema=drifted), EVENT_COLUMNS)
    text = str(error.value)
    assert "column 'quantity' is STRING, expected INT64" in text
    assert "column 'revenue' is missing (expected FLOAT64)" in text
    assert "column 'tenant' is REQUIRED and the code never writes it" in text
    assert "column 'page_url' is REQUIRED, but the code may send NULL" in text


def test_schema_check_accepts_legacy_type_names_and_extra_nullable_columns() -> None:
    legacy = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
    fields = [
        bigquery.SchemaField(c.name, legacy.get(c.type, c.type), mode=c.mode) for c in EVENT_COLUMNS
    ]
    fields.append(bigquery.SchemaField("added_later", "STRING"))
    check_schema(bigquery.Table("p.d.events", schema=fields), EVENT_COLUMNS)


def test_requests_split_under_ten_megabytes() -> None:
    event = make_event(properties='{"blob": "' + "x" * 2000 + '"}')
    rows = EVENT_ROWS.encode(
        [msgspec.structs.replace(event, event_id=uuid.uuid4()) for _ in range(12_000)]
    )
    assert sum(len(r) for r in rows) > 2.5 * MAX_REQUEST_BYTES  # ~26 MB of rows
    chunks = split_rows(rows, MAX_REQUEST_BYTES - REQUEST_HEADROOM_BYTES)
    assert len(chunks) == 3
    assert [row for chunk in chunks for row in chunk] == rows  # nothing lost, order kept
    stream = "projects/p/datasets/d/tables/events/streams/_default"
    schema = types.ProtoSchema(proto_descriptor=EVENT_ROWS.descriptor)
    for index, chunk in enumerate(chunks):
        request = append_request(stream, chunk, schema if index == 0 else None)
        size = len(types.AppendRowsRequest.serialize(request))
        assert size < MAX_REQUEST_BYTES
        assert request.write_stream == stream
    # Full chunks really use the budget: not split needlessly small.
    first = len(types.AppendRowsRequest.serialize(append_request(stream, chunks[0], schema)))
    assert first > MAX_REQUEST_BYTES - REQUEST_HEADROOM_BYTES - 3000


def test_a_row_larger_than_a_request_is_refused() -> None:
    from processor.bigquery import BigQueryWriteError

    with pytest.raises(BigQueryWriteError, match="row 1 is 2000 bytes"):
        split_rows([b"a" * 10, b"b" * 2000], 1000)


@pytest.mark.parametrize(
    ("error", "row_errors", "refused", "transient"),
    [
        ({"code": 3, "message": "Field quantity: bad value"}, [], True, False),  # INVALID_ARGUMENT
        ({"code": 3, "message": "Errors found while processing rows"}, [(1, "bad")], True, False),
        ({"code": 14, "message": "backend unavailable"}, [], False, True),  # UNAVAILABLE
        ({"code": 8, "message": "quota exceeded"}, [], False, True),  # RESOURCE_EXHAUSTED
        ({"code": 7, "message": "permission denied"}, [], False, False),  # PERMISSION_DENIED
        ({"code": 5, "message": "table not found"}, [], False, False),  # NOT_FOUND
    ],
)
def test_append_responses_are_told_apart(
    error: dict[str, object], row_errors: list[tuple[int, str]], refused: bool, transient: bool
) -> None:
    """What BigQuery answers per AppendRows request: refused rows are set aside with their
    message (never retried), outages are retried, the rest (a missing table, permissions)
    raises for the batch to be redelivered."""
    response = types.AppendRowsResponse(
        error=error,
        row_errors=[types.RowError(index=i, message=m) for i, m in row_errors],
    )
    found = response_error(response, "events")
    assert found is not None
    assert isinstance(found, RowsRefused) is refused
    assert found.transient is transient
    assert str(error["message"]) in str(found)
    assert all(f"row {i}: {m}" in str(found) for i, m in row_errors)
    assert response_error(types.AppendRowsResponse(append_result={}), "events") is None
