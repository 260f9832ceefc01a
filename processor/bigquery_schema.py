"""The BigQuery dataset's shape, derived once from the processor's records.

`events` and `bad_events` have one column per field of EnrichedEvent / BadEvent, typed from
the field's Python type; a field that may be None is NULLABLE, any other is REQUIRED. Both
tables are flat: nested parts of an event (order items, properties) are JSON text in STRING
columns, which BigQuery's JSON functions read directly (and bqemulator 1.4.0 drops nested
fields of RECORD columns on AppendRows).

The Storage Write API's default stream is at-least-once, so `events` may hold an event twice
(a message redelivered after its rows were appended). Readers use the views:

- `events_dedup`: one row per event_id, the first one received.
- `customer_analytics`: per-customer rollups (a customer is `visitor_key`: user_id when known,
  else anonymous_id) computed from `events_dedup`. Being derived from the deduplicated events,
  it stays exact under any redelivery with no state of its own to keep consistent. Real
  BigQuery's materialized views cannot read a view with window functions; if this view grows
  too costly, materialize it with a scheduled query rather than appending rollup rows.
"""

from __future__ import annotations

import builtins
import string
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from clickstream_contract.config import Settings
from processor.records import BadEvent, EnrichedEvent

EVENTS = "events"
BAD_EVENTS = "bad_events"
EVENTS_DEDUP = "events_dedup"
CUSTOMER_ANALYTICS = "customer_analytics"
VIEWS_DIR = Path(__file__).parent / "bigquery_views"

BIGQUERY_TYPE_OF: dict[type, str] = {
    uuid.UUID: "STRING",
    datetime: "TIMESTAMP",
    float: "FLOAT64",
    int: "INT64",
    bool: "BOOL",
    str: "STRING",
    bytes: "BYTES",
}


# The REST API reports legacy SQL names for some types.
LEGACY_TYPE_NAMES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


class SchemaMismatchError(RuntimeError):
    """A BigQuery table's schema disagrees with the one this code writes."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # BigQuery standard SQL type name
    required: bool
    python_type: builtins.type

    @property
    def mode(self) -> str:
        return "REQUIRED" if self.required else "NULLABLE"


def columns_of(record: type[msgspec.Struct]) -> tuple[Column, ...]:
    """One column per field of a flat record, in field order."""
    columns = []
    for field in msgspec.structs.fields(record):
        python_type, optional = field.type, False
        if typing.get_origin(python_type) in (typing.Union, types.UnionType):
            members = [t for t in typing.get_args(python_type) if t is not type(None)]
            optional = len(members) < len(typing.get_args(python_type))
            if len(members) != 1:
                raise TypeError(f"{record.__name__}.{field.name}: only `T | None` unions map")
            python_type = members[0]
        if python_type not in BIGQUERY_TYPE_OF:
            raise TypeError(f"{record.__name__}.{field.name}: no BigQuery type for {python_type}")
        bigquery_type = BIGQUERY_TYPE_OF[python_type]
        columns.append(Column(field.name, bigquery_type, not optional, python_type))
    return tuple(columns)


EVENT_COLUMNS = columns_of(EnrichedEvent)
BAD_EVENT_COLUMNS = columns_of(BadEvent)


def schema_fields(columns: tuple[Column, ...]) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(c.name, c.type, mode=c.mode) for c in columns]


def view_sql(name: str, project: str, dataset: str) -> str:
    """The query of view `name`: processor/bigquery_views/<name>.sql, which Terraform deploys
    too (templatefile, same `${project}` and `${dataset}` placeholders)."""
    template = string.Template((VIEWS_DIR / f"{name}.sql").read_text())
    return template.substitute(project=project, dataset=dataset).strip()


def table_definitions(project: str, dataset: str) -> list[bigquery.Table]:
    """Every table and view of the dataset, in creation order (views after what they read)."""

    def ref(name: str) -> str:
        return f"{project}.{dataset}.{name}"

    events = bigquery.Table(ref(EVENTS), schema=schema_fields(EVENT_COLUMNS))
    events.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field="occurred_at"
    )
    events.clustering_fields = ["event_type", "user_id"]
    events.description = "Enriched events, at least once: read events_dedup for exact counts."

    bad_events = bigquery.Table(ref(BAD_EVENTS), schema=schema_fields(BAD_EVENT_COLUMNS))
    bad_events.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field="received_at"
    )
    bad_events.description = "Events or messages that could never be processed, with reason."

    events_dedup = bigquery.Table(ref(EVENTS_DEDUP))
    events_dedup.view_query = view_sql(EVENTS_DEDUP, project, dataset)
    events_dedup.description = "events with one row per event_id (the first received)."

    customer_analytics = bigquery.Table(ref(CUSTOMER_ANALYTICS))
    customer_analytics.view_query = view_sql(CUSTOMER_ANALYTICS, project, dataset)
    customer_analytics.description = "Per-customer rollups over events_dedup."

    return [events, bad_events, events_dedup, customer_analytics]


def check_schema(table: bigquery.Table, columns: tuple[Column, ...]) -> None:
    """Raise SchemaMismatchError unless `table` accepts rows of exactly these columns."""
    existing = {field.name: field for field in table.schema}
    problems = []
    for column in columns:
        field = existing.pop(column.name, None)
        if field is None:
            problems.append(f"column {column.name!r} is missing (expected {column.type})")
            continue
        if LEGACY_TYPE_NAMES.get(field.field_type, field.field_type) != column.type:
            problems.append(f"column {column.name!r} is {field.field_type}, expected {column.type}")
        elif field.mode == "REQUIRED" and not column.required:
            problems.append(f"column {column.name!r} is REQUIRED, but the code may send NULL")
        elif field.mode == "REPEATED":
            problems.append(f"column {column.name!r} is REPEATED, expected {column.mode}")
    problems += [
        f"column {name!r} is REQUIRED and the code never writes it"
        for name, field in existing.items()
        if field.mode == "REQUIRED"
    ]
    if problems:
        raise SchemaMismatchError(
            f"table {table.full_table_id or table.table_id}: " + "; ".join(problems)
        )


def ensure_dataset(client: bigquery.Client, dataset: str) -> None:
    """Create the dataset, tables and views when missing; check the tables we write to."""
    project = client.project
    try:
        # Look before creating: in production the processor may write to the dataset Terraform
        # made without the right to create one, and creating answers 403, not "exists".
        client.get_dataset(f"{project}.{dataset}")
    except NotFound:
        client.create_dataset(bigquery.Dataset(f"{project}.{dataset}"), exists_ok=True)
    written = {EVENTS: EVENT_COLUMNS, BAD_EVENTS: BAD_EVENT_COLUMNS}
    for definition in table_definitions(project, dataset):
        table = client.create_table(definition, exists_ok=True)
        if definition.table_id in written:
            check_schema(table, written[definition.table_id])


def bigquery_client(settings: Settings) -> bigquery.Client:
    """A REST client for BigQuery, or for the emulator when one is configured."""
    if settings.bigquery_emulator_host is None:
        return bigquery.Client(project=settings.project)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=settings.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=settings.bigquery_emulator_host),
    )
