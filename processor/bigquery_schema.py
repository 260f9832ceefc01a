"""The BigQuery dataset's shape, derived once from the processor's records.

`events` and `bad_events` have one column per field of EnrichedEvent / BadEvent, typed from
the field's Python type; a field that may be None is NULLABLE, any other is REQUIRED. Both
tables are flat: nested parts of an event (order items, properties) are JSON text in STRING
columns, which BigQuery's JSON functions read directly (and bqemulator 1.4.0 drops nested
fields of RECORD columns on AppendRows).

The Storage Write API's default stream is at-least-once, so `events` may hold an event twice
(a message redelivered after its rows were appended). Readers use:

- `events_dedup` (view): one row per event_id, the first one received; for ad-hoc queries.
- `customer_daily` (table, partitioned by day): one row per customer (`visitor_key`: user_id
  when known, else anonymous_id) and day, from the deduplicated events. A scheduled query
  (processor/bigquery_views/customer_daily_merge.sql, run every few hours by BigQuery in
  production) recomputes the last days' partitions, so it reads only those partitions of
  `events`, stays exact under redelivery and picks up late events. A materialized view cannot
  do this: BigQuery's incremental materialized views allow no window function, which the
  deduplication by event_id needs, and a non-incremental one recomputes everything.
- `customer_analytics` (view): per-customer rollups summed over `customer_daily` (far fewer
  rows than `events`); as fresh as customer_daily's last refresh.

Amounts: a purchase row keeps `revenue` and `currency` as sent, and carries
`revenue_reporting` (NUMERIC, exact cents), its revenue converted by the PostgreSQL sink
(processor/currency.py, the code that fills PostgreSQL's aggregates) into `reporting_currency`,
or NULL without a rate. customer_daily and customer_analytics sum only converted amounts in
the deployment's reporting currency and list the other orders apart (`unconverted_order_ids`,
`unconverted_orders`).
"""

from __future__ import annotations

import builtins
import string
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from clickstream_contract.config import Settings, parse_currency
from processor.records import BadEvent, EnrichedEvent

EVENTS = "events"
BAD_EVENTS = "bad_events"
EVENTS_DEDUP = "events_dedup"
CUSTOMER_DAILY = "customer_daily"
CUSTOMER_ANALYTICS = "customer_analytics"
CUSTOMER_DAILY_MERGE = "customer_daily_merge"
# How many whole days before the run's date each refresh recomputes (late events older than
# that need a backfill run); Terraform's customer_daily_refresh_days defaults to the same.
CUSTOMER_DAILY_REFRESH_DAYS = 3
VIEWS_DIR = Path(__file__).parent / "bigquery_views"

BIGQUERY_TYPE_OF: dict[type, str] = {
    uuid.UUID: "STRING",
    datetime: "TIMESTAMP",
    float: "FLOAT64",
    int: "INT64",
    bool: "BOOL",
    str: "STRING",
    bytes: "BYTES",
    Decimal: "NUMERIC",
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


CUSTOMER_DAILY_FIELDS = [
    bigquery.SchemaField("day", "DATE", mode="REQUIRED"),
    bigquery.SchemaField("visitor_key", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("user_id", "STRING"),
    bigquery.SchemaField("first_seen_at", "TIMESTAMP", mode="REQUIRED"),
    bigquery.SchemaField("last_seen_at", "TIMESTAMP", mode="REQUIRED"),
    bigquery.SchemaField("events", "INT64", mode="REQUIRED"),
    # Ids rather than counts: a session or an order spanning two days counts once in total.
    bigquery.SchemaField("session_ids", "STRING", mode="REPEATED"),
    bigquery.SchemaField("order_ids", "STRING", mode="REPEATED"),
    # In reporting_currency: the converted purchases only (processor/currency.py).
    bigquery.SchemaField("revenue", "NUMERIC", mode="REQUIRED"),
    bigquery.SchemaField("reporting_currency", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("unconverted_order_ids", "STRING", mode="REPEATED"),
    bigquery.SchemaField("last_order_at", "TIMESTAMP"),
]


def view_sql(name: str, project: str, dataset: str, **placeholders: object) -> str:
    """The statement `name`: processor/bigquery_views/<name>.sql, which Terraform deploys
    too (templatefile, same `${project}`, `${dataset}` and other placeholders)."""
    template = string.Template((VIEWS_DIR / f"{name}.sql").read_text())
    return template.substitute(project=project, dataset=dataset, **placeholders).strip()


def refresh_customer_daily(
    client: bigquery.Client,
    dataset: str,
    run_time: datetime,
    days: int = CUSTOMER_DAILY_REFRESH_DAYS,
    reporting_currency: str | None = None,
) -> None:
    """Run customer_daily's scheduled query as BigQuery would at `run_time`, where no scheduler
    runs it (the local stack, tests, a manual backfill), in the deployment's reporting currency
    unless one is named. `@run_time` is bound as a literal: bqemulator 1.4.0 splits a MERGE
    into statements and then miscounts its query parameters."""
    # Checked here too: the code goes into the statement as a literal.
    currency = parse_currency(
        reporting_currency or Settings.from_env().reporting_currency, "reporting_currency"
    )
    statement = view_sql(
        CUSTOMER_DAILY_MERGE, client.project, dataset, days=days, reporting_currency=currency
    )
    literal = f"TIMESTAMP '{run_time.astimezone(UTC).isoformat()}'"
    client.query(statement.replace("@run_time", literal)).result()


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

    customer_daily = bigquery.Table(ref(CUSTOMER_DAILY), schema=CUSTOMER_DAILY_FIELDS)
    customer_daily.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field="day"
    )
    customer_daily.clustering_fields = ["visitor_key"]
    customer_daily.description = (
        "One row per customer and day from the deduplicated events, refreshed by a scheduled query."
    )

    customer_analytics = bigquery.Table(ref(CUSTOMER_ANALYTICS))
    customer_analytics.view_query = view_sql(CUSTOMER_ANALYTICS, project, dataset)
    customer_analytics.description = "Per-customer rollups over customer_daily."

    return [events, bad_events, events_dedup, customer_daily, customer_analytics]


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


def add_new_columns(
    client: bigquery.Client, table: bigquery.Table, columns: tuple[Column, ...]
) -> bigquery.Table:
    """Append the NULLABLE columns a local table of an older release lacks (their old rows
    read NULL); anything else is left for `check_schema` to report. In a cloud project
    Terraform's schema files add them, and the processor may run no query job.

    bqemulator 1.4.0 needs both steps: ALTER TABLE changes its storage but not the schema it
    reports, and a schema update changes only what it reports."""
    present = {field.name for field in table.schema}
    missing = [c for c in columns if c.name not in present and not c.required]
    if not missing:
        return table
    name = f"`{table.project}.{table.dataset_id}.{table.table_id}`"
    for column in missing:  # one column per statement: the emulator takes no more
        client.query(
            f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {column.name} {column.type}"
        ).result()
    table.schema = [*table.schema, *schema_fields(tuple(missing))]
    return client.update_table(table, ["schema"])


def schema_of(fields: list[bigquery.SchemaField]) -> list[tuple[str, str, str]]:
    return [(f.name, LEGACY_TYPE_NAMES.get(f.field_type, f.field_type), f.mode) for f in fields]


def rebuild_customer_daily(
    client: bigquery.Client, definition: bigquery.Table, dataset: str, now: datetime
) -> bigquery.Table:
    """customer_daily again, in today's shape, refreshed over every day `events` holds: it is
    derived, so a table of an older release is replaced rather than migrated."""
    client.delete_table(definition.reference)
    table = client.create_table(definition)
    first = f"SELECT MIN(occurred_at) AS first FROM `{client.project}.{dataset}.{EVENTS}`"
    (row,) = client.query(first).result()
    if row.first is not None:
        days = (now.date() - row.first.astimezone(UTC).date()).days + 1
        refresh_customer_daily(client, dataset, now, days=max(days, CUSTOMER_DAILY_REFRESH_DAYS))
    return table


def ensure_dataset(client: bigquery.Client, dataset: str, *, local: bool = False) -> None:
    """Create the dataset, tables and views when missing; check the tables we write to; give a
    view from an older release its current query. `local` (an emulator, whose data a local
    stack keeps across releases): also add the nullable columns this release added and rebuild
    a customer_daily of an older shape; in a cloud project Terraform does both."""
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
            columns = written[definition.table_id]
            check_schema(add_new_columns(client, table, columns) if local else table, columns)
        elif definition.table_id == CUSTOMER_DAILY:
            if local and schema_of(table.schema) != schema_of(definition.schema):
                rebuild_customer_daily(client, definition, dataset, datetime.now(UTC))
        # bqemulator 1.4.0 reports no view query (None): its views are rewritten at each start.
        elif definition.view_query and (table.view_query or "").strip() != definition.view_query:
            table.view_query = definition.view_query
            client.update_table(table, ["view_query"])


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
