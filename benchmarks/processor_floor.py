"""The floor under the processor's targets: what the least possible work costs here.

    .venv/bin/python benchmarks/processor_floor.py [--batches 40] [--batch 20000]

Issue 15 asks, on this 2-core machine, for at most 12 us of PostgreSQL CPU per event, 60k
events/s wall through the processor and PostgreSQL (at most 33 us of both per event), and 40k
events/s end to end (50 us per event for every part, the gateway, the Pub/Sub emulator and the
load generator included). This measures, on the shoppers workload, batch by batch, four ways of
writing the same decoded batches into one PostgreSQL server, alternately:

- the least writes: the batch aggregated in the fewest Python lines that can do it, then one
  statement per table with only a primary key: the event ids (the dedup key exactly once needs),
  an upsert per session (first and last seen, events), per customer (the same), per minute and
  visitor (unique visitors) and per minute and event type (the live counts). Nothing else: no
  timeline, funnel, product, traffic or device rollup, no identity, revenue or bad event, no
  index the dashboard reads by, and one writer (no deltas: concurrent writers would wait for
  each other's row locks);
- every feature: the rows of every table the sink keeps (the sink's own aggregation,
  `BatchAggregates`, timeline included) written straight into tables with only their primary
  key (the timeline: the one index the dashboard reads it by), each table in one statement, by
  one writer: what the product stores, without the deltas that let concurrent writers go
  without waiting, the dashboard's secondary indexes and rollup triggers, and identities;
- the sink itself (`PostgresSink.write`, its apply round included), one batch at a time;
- the sink without the dashboard's customer timeline (`visitor_activity` rows neither built nor
  sent; the issue allows the timeline to come from BigQuery), in a scratch database of its own.

Per event: PostgreSQL's CPU (the connection's backend, and the whole server: WAL writer,
checkpointer, autovacuum too, read from /proc when it runs on this machine), the processor's
CPU for the write (this process), the rows each writes, and the processor's decode + enrich
(the same batches for all). Then the wall ceiling on two cores if nothing waited: 2 / (all the
CPU per event). Also the protobuf floor of the BigQuery rows: the row encoder's straight-line
code on values converted beforehand, i.e. upb setting each non-null field and serializing.
Against DATABASE_URL (its role must be allowed to create the scratch database) or a throwaway
pgserver.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg
import msgspec
from processor_throughput import backend_cpu, fresh_database, local_postmaster, server_cpu
from processor_workload import batches

from clickstream.local_postgres import postgres_url
from clickstream_contract import envelope
from clickstream_contract.event import Event
from clickstream_contract.gc_tuning import tune_after_startup
from processor.bigquery_rows import CONVERSIONS, EVENT_ROWS, compile_encoder
from processor.bigquery_schema import Column
from processor.core import Message, decode
from processor.currency import Rates
from processor.db import Connection
from processor.migrations import migrate
from processor.postgres import (
    APPLY_COUNTERS_SQL,
    APPLY_CUSTOMERS_SQL,
    APPLY_SESSIONS_SQL,
    BatchAggregates,
    KnownRows,
    PostgresSink,
    Written,
    create_sink_pool,
)
from processor.records import EnrichedEvent

ROUNDS = 5
astuple = msgspec.structs.astuple
EVENT_ID_INT = operator.attrgetter("event_id.int")
WAYS = ("least writes", "every feature", "the sink", "no timeline")
REPORTING_CURRENCY = "EUR"

LEAST_TABLES_SQL = """
DROP TABLE IF EXISTS least_event_ids, least_sessions, least_customers, least_visitor_minutes,
                     least_minutes;
CREATE TABLE least_event_ids (event_id uuid PRIMARY KEY);
CREATE TABLE least_sessions (session_id text COLLATE "C" PRIMARY KEY, first_seen_at timestamptz,
                             last_seen_at timestamptz, events bigint);
CREATE TABLE least_customers (visitor_key text COLLATE "C" PRIMARY KEY,
                              first_seen_at timestamptz, last_seen_at timestamptz, events bigint);
CREATE TABLE least_visitor_minutes (minute timestamptz, visitor_key text COLLATE "C",
                                    PRIMARY KEY (minute, visitor_key));
CREATE TABLE least_minutes (minute timestamptz, event_type text COLLATE "C", events bigint,
                            PRIMARY KEY (minute, event_type));
"""
# Sessions and customers: (key, first seen, last seen, events), folded per batch beforehand.
UPSERT_SQL = """
INSERT INTO {table} SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[],
                                         $4::bigint[])
ON CONFLICT ({key}) DO UPDATE SET
    first_seen_at = least({table}.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest({table}.last_seen_at, excluded.last_seen_at),
    events = {table}.events + excluded.events
"""
UPSERT_SESSIONS_SQL = UPSERT_SQL.format(table="least_sessions", key="session_id")
UPSERT_CUSTOMERS_SQL = UPSERT_SQL.format(table="least_customers", key="visitor_key")
INSERT_VISITOR_MINUTES_SQL = """
INSERT INTO least_visitor_minutes SELECT * FROM unnest($1::timestamptz[], $2::text[])
ON CONFLICT DO NOTHING
"""
UPSERT_MINUTES_SQL = """
INSERT INTO least_minutes SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[])
ON CONFLICT (minute, event_type) DO UPDATE SET events = least_minutes.events + excluded.events
"""


# The product's rows (the sink's own aggregation, `BatchAggregates`), written straight into
# tables with only their primary key (the timeline: the one index the dashboard reads it by), by
# one writer: no deltas, no dashboard index or rollup trigger, no identities.
EVERY_FEATURE_TABLES_SQL = """
DROP TABLE IF EXISTS every_event_ids, every_sessions, every_customers, every_visitor_minutes,
                     every_visitor_hours, every_visitor_days, every_funnel_steps, every_products,
                     every_minutes, every_activity;
CREATE TABLE every_event_ids (event_id uuid PRIMARY KEY);
CREATE TABLE every_sessions (
    session_id text COLLATE "C" PRIMARY KEY, visitor_key text, anonymous_id text, user_id text,
    started_at timestamptz, last_seen_at timestamptz, events bigint, page_views bigint,
    landing_url text, referrer_class text, utm_source text, utm_medium text, utm_campaign text,
    device_type text, browser text, os text, purchased boolean, revenue numeric(14, 2));
CREATE TABLE every_customers (
    visitor_key text COLLATE "C" PRIMARY KEY, user_id text, anonymous_ids text[],
    first_seen_at timestamptz, last_seen_at timestamptz, events bigint, orders bigint,
    lifetime_value numeric(14, 2), last_order_id text, last_order_at timestamptz,
    first_source text, device_type text);
CREATE TABLE every_visitor_minutes (minute timestamptz, visitor_key text COLLATE "C",
                                    PRIMARY KEY (minute, visitor_key));
CREATE TABLE every_visitor_hours (hour timestamptz, visitor_key text COLLATE "C",
                                  PRIMARY KEY (hour, visitor_key));
CREATE TABLE every_visitor_days (day date, visitor_key text COLLATE "C",
                                 PRIMARY KEY (day, visitor_key));
CREATE TABLE every_funnel_steps (session_id text COLLATE "C", step text COLLATE "C",
                                 reached_at timestamptz, PRIMARY KEY (session_id, step));
CREATE TABLE every_products (hour timestamptz, product_id text COLLATE "C", product_name text,
                             category text, views bigint, carts bigint, removals bigint,
                             units bigint, revenue numeric(14, 2), PRIMARY KEY (hour, product_id));
CREATE TABLE every_minutes (minute timestamptz, event_type text COLLATE "C", events bigint,
                            revenue numeric(14, 2), PRIMARY KEY (minute, event_type));
CREATE TABLE every_activity (visitor_key text COLLATE "C", received_at timestamptz,
                             last_at timestamptz, minutes timestamptz[], events json);
CREATE INDEX ON every_activity (visitor_key, last_at DESC);
"""


def upsert_clause(sql: str, conflict: str, end: str, table: str, into: str) -> str:
    """The sink's `ON CONFLICT ... DO UPDATE` for `table` (from `conflict` up to `end`), on the
    floor's table `into`: the same work per row that exists, kept in one place."""
    clause = sql[sql.index(conflict) : sql.index(end, sql.index(conflict))]
    lines = [line for line in clause.splitlines() if "sessions = customers.sessions" not in line]
    return "\n".join(lines).replace(f"{table}.", f"{into}.")


EVERY_SESSIONS_SQL = f"""
INSERT INTO every_sessions SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
    $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::text[], $15::text[], $16::text[], $17::boolean[], $18::numeric[])
{upsert_clause(APPLY_SESSIONS_SQL, "ON CONFLICT", "RETURNING", "sessions", "every_sessions")}
"""
# The profile's session count is left out: the sink counts it from the sessions it created.
EVERY_CUSTOMERS_SQL = f"""
INSERT INTO every_customers
SELECT visitor_key, user_id, string_to_array(anonymous_ids, E'\\x1f'), first_seen_at,
       last_seen_at, events, orders, lifetime_value, last_order_id, last_order_at, first_source,
       device_type
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bigint[],
    $7::bigint[], $8::numeric[], $9::text[], $10::timestamptz[], $11::text[], $12::text[])
    AS d(visitor_key, user_id, anonymous_ids, first_seen_at, last_seen_at, events, orders,
         lifetime_value, last_order_id, last_order_at, first_source, device_type)
{upsert_clause(APPLY_CUSTOMERS_SQL, "ON CONFLICT", "RETURNING", "customers", "every_customers")}
"""

EVERY_KEYS_SQL = """
INSERT INTO every_{table} SELECT * FROM unnest($1::{type}[], $2::text[]) ON CONFLICT DO NOTHING
"""
EVERY_FUNNEL_SQL = """
INSERT INTO every_funnel_steps SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (session_id, step) DO UPDATE SET reached_at = excluded.reached_at
WHERE excluded.reached_at < every_funnel_steps.reached_at
"""
EVERY_PRODUCTS_SQL = f"""
INSERT INTO every_products SELECT * FROM unnest(
    $1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
    $7::bigint[], $8::bigint[], $9::numeric[])
{
    upsert_clause(
        APPLY_COUNTERS_SQL,
        "ON CONFLICT (hour, product_id)",
        ";",
        "product_metrics_hour",
        "every_products",
    )
}
"""
EVERY_MINUTES_SQL = """
INSERT INTO every_minutes SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[],
                                               $4::numeric[])
ON CONFLICT (minute, event_type) DO UPDATE SET events = every_minutes.events + excluded.events,
                                               revenue = every_minutes.revenue + excluded.revenue
"""


@dataclass
class Cost:
    """CPU seconds and rows written by one way of writing, over the run."""

    backend: float = 0.0
    server: float = 0.0
    processor: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    statements: dict[str, float] = field(default_factory=dict)  # the backend's CPU, per table

    def count(self, table: str, rows: int, backend_seconds: float) -> None:
        self.rows[table] = self.rows.get(table, 0) + rows
        self.statements[table] = self.statements.get(table, 0.0) + backend_seconds


Ways: TypeAlias = dict[str, Cost]  # per way of writing, in WAYS order


def _folded(
    groups: dict[str, list[object]],
) -> tuple[list[str], list[object], list[object], list[object]]:
    """Rows (key, first, last, events) as one list per column, in key order."""
    keys = sorted(groups)
    rows = [groups[key] for key in keys]
    return keys, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _see(groups: dict[str, list[object]], key: str, at: datetime) -> None:
    row = groups.get(key)
    if row is None:
        groups[key] = [at, at, 1]
        return
    if at < row[0]:  # type: ignore[operator]
        row[0] = at
    elif at > row[1]:  # type: ignore[operator]
        row[1] = at
    row[2] += 1  # type: ignore[operator]


async def write_least(conn: asyncpg.Connection, events: list[EnrichedEvent], cost: Cost) -> None:
    """The least writes (module docstring) of one batch, in one transaction. Minutes are kept
    as epoch minutes (ints hash and compare cheaply) and made datetimes once each."""
    sessions: dict[str, list[object]] = {}
    customers: dict[str, list[object]] = {}
    visitor_minutes: set[tuple[int, str]] = set()
    minutes: dict[tuple[int, str], int] = {}
    for e in events:
        at = e.occurred_at
        minute = int(at.timestamp()) // 60
        _see(sessions, e.session_id, at)
        _see(customers, e.visitor_key, at)
        visitor_minutes.add((minute, e.visitor_key))
        key = (minute, e.event_type)
        minutes[key] = minutes.get(key, 0) + 1
    ids = [(e.event_id,) for e in sorted(events, key=EVENT_ID_INT)]
    pairs = sorted(visitor_minutes)
    counts = sorted(minutes.items())
    as_datetime = {m: datetime.fromtimestamp(m * 60, UTC) for m, _ in minutes}
    pid = conn.get_server_pid()
    statements: list[tuple[str, int, Callable[[], Awaitable[object]]]] = [
        ("event ids", len(ids),
         partial(conn.copy_records_to_table, "least_event_ids", records=ids)),
        ("sessions", len(sessions), partial(conn.execute, UPSERT_SESSIONS_SQL, *_folded(sessions))),
        ("customers", len(customers),
         partial(conn.execute, UPSERT_CUSTOMERS_SQL, *_folded(customers))),
        ("visitor minutes", len(pairs),
         partial(conn.execute, INSERT_VISITOR_MINUTES_SQL, [as_datetime[m] for m, _ in pairs],
                 [v for _, v in pairs])),
        ("minute counts", len(counts),
         partial(conn.execute, UPSERT_MINUTES_SQL, [as_datetime[m] for (m, _), _ in counts],
                 [kind for (_, kind), _ in counts], [n for _, n in counts])),
    ]  # fmt: skip
    async with conn.transaction():
        for table, rows, statement in statements:
            before = backend_cpu(pid)
            await statement()
            cost.count(table, rows, backend_cpu(pid) - before)


async def write_every_feature(
    conn: asyncpg.Connection, events: list[EnrichedEvent], cost: Cost, known: KnownRows
) -> None:
    """The product's rows of one batch (`BatchAggregates`, as the sink builds them, less the
    rows `known` to be stored), each table in one statement, in one transaction: what the sink
    writes, without its deltas, indexes, triggers and identities."""
    batch = BatchAggregates(list(events), Rates(REPORTING_CURRENCY, {}))
    ids = [(e.event_id,) for e in sorted(events, key=EVENT_ID_INT)]
    minutes = batch.visitor_minutes_rows(known.minutes)
    hours, days = batch.visitor_hours(known.hours), batch.visitor_days(known.days)
    steps = batch.funnel_steps(known.steps)
    tables: list[tuple[str, str | None, list[Any]]] = [
        ("event ids", None, ids),
        ("timeline", None, batch.activity_records()),
        ("sessions", EVERY_SESSIONS_SQL, batch.sessions_rows()),
        ("customers", EVERY_CUSTOMERS_SQL,  # an array per row: joined, split by the statement
         [(v, u, "\x1f".join(anon), *rest) for v, u, anon, *rest in batch.customers_rows()]),
        ("visitor minutes", EVERY_KEYS_SQL.format(table="visitor_minutes", type="timestamptz"),
         minutes),
        ("visitor hours", EVERY_KEYS_SQL.format(table="visitor_hours", type="timestamptz"), hours),
        ("visitor days", EVERY_KEYS_SQL.format(table="visitor_days", type="date"), days),
        ("funnel steps", EVERY_FUNNEL_SQL, steps),
        ("products", EVERY_PRODUCTS_SQL, batch.products_rows()),
        ("minute counts", EVERY_MINUTES_SQL, batch.minute_rows()),
    ]  # fmt: skip
    copies = {"event ids": "every_event_ids", "timeline": "every_activity"}
    pid = conn.get_server_pid()
    async with conn.transaction():
        for table, sql, rows in tables:
            before = backend_cpu(pid)
            if sql is None:
                await conn.copy_records_to_table(copies[table], records=rows)
            elif rows:
                await conn.execute(sql, *(list(column) for column in zip(*rows, strict=True)))
            cost.count(table, len(rows), backend_cpu(pid) - before)
    known.add((minutes, hours, days, steps))


async def measure(
    work: Callable[[], Awaitable[object]], backend: int, postmaster: int | None, cost: Cost
) -> None:
    """Run `work` and add its CPU to `cost`."""
    server, back, client = (
        server_cpu(postmaster) if postmaster else 0.0,
        backend_cpu(backend),
        time.process_time(),
    )
    await work()
    cost.processor += time.process_time() - client
    cost.backend += backend_cpu(backend) - back
    if postmaster:
        cost.server += server_cpu(postmaster) - server


class SinkWithoutTimeline(PostgresSink):
    """The sink without its timeline rows: what the dashboard's customer timeline costs."""

    async def _append_deltas(self, conn: Connection, batch: BatchAggregates) -> Written:
        batch.activity_records = list  # type: ignore[method-assign]  # no rows to build or send
        return await super()._append_deltas(conn, batch)


async def write_floor(database_url: str, work: list[list[Message]]) -> tuple[Ways, float, int]:
    """Each way's costs, the decode + enrich CPU seconds and the events, batch by batch."""
    ways: Ways = {name: Cost() for name in WAYS}
    decode_cpu, n = 0.0, 0
    async with fresh_database(database_url) as without_timeline_url:
        for url in (database_url, without_timeline_url):
            await migrate(url)
        least_conn = await asyncpg.connect(database_url, server_settings={"jit": "off"})
        await least_conn.execute(LEAST_TABLES_SQL)
        every_conn = await asyncpg.connect(database_url, server_settings={"jit": "off"})
        await every_conn.execute(EVERY_FEATURE_TABLES_SQL)
        known = KnownRows()
        pool = await create_sink_pool(database_url, max_size=1)
        other_pool = await create_sink_pool(without_timeline_url, max_size=1)
        sinks = {"the sink": PostgresSink(pool), "no timeline": SinkWithoutTimeline(other_pool)}
        backends = {
            "least writes": least_conn.get_server_pid(),
            "every feature": every_conn.get_server_pid(),
        }
        for name, sink in sinks.items():
            async with sink.pool.acquire() as conn:
                backends[name] = conn.get_server_pid()
        postmaster = local_postmaster(least_conn.get_server_pid())
        try:
            for messages in work:
                client = time.process_time()
                events = decode(messages).events
                decode_cpu += time.process_time() - client
                n += len(events)
                least = ways["least writes"]
                least_write = partial(write_least, least_conn, events, least)
                await measure(least_write, backends["least writes"], postmaster, least)
                every = ways["every feature"]
                every_write = partial(write_every_feature, every_conn, events, every, known)
                await measure(every_write, backends["every feature"], postmaster, every)
                for name, sink in sinks.items():
                    events = decode(messages).events  # the sink stamps its events: fresh ones
                    sink_write = partial(sink.write, events, [])
                    await measure(sink_write, backends[name], postmaster, ways[name])
            ways["the sink"].rows = await _sink_row_counts(pool)
        finally:
            await least_conn.execute(LEAST_TABLES_SQL.split("CREATE", 1)[0])
            await least_conn.close()
            await every_conn.execute(EVERY_FEATURE_TABLES_SQL.split("CREATE", 1)[0])
            await every_conn.close()
            await pool.close()
            await other_pool.close()
    return ways, decode_cpu, n


async def _sink_row_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows the sink inserted or updated over the run, per table (its statistics)."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        rows = await conn.fetch(
            "SELECT relname, n_tup_ins + n_tup_upd AS written FROM pg_stat_user_tables"
            " WHERE n_tup_ins + n_tup_upd > 0 AND relname NOT LIKE 'least\\_%'"
            " AND relname NOT LIKE 'every\\_%' ORDER BY 2 DESC"
        )
    return {row["relname"]: row["written"] for row in rows}


def best_cpu(work: Callable[[], object]) -> float:
    """The least CPU time of ROUNDS runs of `work`."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def event_bodies(messages: list[Message]) -> list[bytes]:
    return [
        raw
        for message in messages
        for group in envelope.decode(message.data, dict(message.attributes)).groups
        for raw in group.events
    ]


def protobuf_floor(events: list[EnrichedEvent]) -> float:
    """CPU seconds of the encoder's own straight-line code (`compile_encoder`) on values
    converted beforehand: what is left is upb setting the fields and serializing."""
    columns = tuple(replace(column, python_type=object) for column in EVENT_ROWS.columns)
    encode = compile_encoder(EVENT_ROWS.message, columns)
    converted = msgspec.defstruct("Converted", [(column.name, object) for column in columns])
    prepared = [converted(*map(_converted, EVENT_ROWS.columns, astuple(e))) for e in events]
    return best_cpu(lambda: [encode(row) for row in prepared])


def _converted(column: Column, value: object) -> object:
    convert = CONVERSIONS.get(column.python_type)
    return value if value is None or convert is None else convert(value)


def report(ways: Ways, decode_cpu: float, n: int) -> None:
    def us(seconds: float) -> str:
        return f"{seconds / n * 1e6:6.1f} us"

    def line(label: str, values: list[str], note: str = "") -> None:
        print(f"{label:34s}" + "".join(f" {value:>13s}" for value in values) + note)

    line("per event", list(ways))
    line("  PostgreSQL, the backend", [us(c.backend) for c in ways.values()], "  (target 12 us)")
    line("  PostgreSQL, the whole server", [us(c.server) for c in ways.values()])
    line("  processor, the write", [us(c.processor) for c in ways.values()])
    line("  processor, decode + enrich", [us(decode_cpu) for _ in ways])
    for name, cost in ways.items():
        total = (cost.server + cost.processor + decode_cpu) / n * 1e6
        print(f"  {name}: processor and PostgreSQL {total:.1f} us per event: at most "
              f"{2e6 / total:,.0f} events/s wall on 2 cores (target 60,000: 33.3 us)")  # fmt: skip
    for name in ("least writes", "every feature"):
        print(f"{name}, per statement: rows per event and the backend's CPU per event")
        cost = ways[name]
        for table, rows in cost.rows.items():
            print(f"  {table:32s} {rows / n:5.2f} {us(cost.statements[table])}")
    print("rows inserted or updated per event (the sink, every table):  " + ", ".join(
        f"{table} {rows / n:.2f}" for table, rows in ways["the sink"].rows.items()))  # fmt: skip


async def run(database_url: str, count: int, size: int) -> None:
    tune_after_startup()  # as the worker does once started
    stream = batches("shoppers", size)
    decode(next(stream))  # warm the enrichment caches
    work = [next(stream) for _ in range(count)]
    ways, decode_cpu, n = await write_floor(database_url, work)
    print(f"shoppers workload: {count} batches of {size} ({n} events), one batch at a time, "
          f"the {len(WAYS)} ways alternately")  # fmt: skip
    report(ways, decode_cpu, n)

    sample = work[:5]
    bodies = [raw for messages in sample for raw in event_bodies(messages)]
    validate = msgspec.json.Decoder(Event).decode
    print(f"decode + validate alone (no enrichment), best of {ROUNDS}: "
          f"{best_cpu(lambda: [validate(raw) for raw in bodies]) / len(bodies) * 1e6:.1f} us "
          "per event")  # fmt: skip
    rows = [event for messages in sample for event in decode(messages).events]
    row = protobuf_floor(rows) / len(rows) * 1e6
    print(f"protobuf build + serialize, best of {ROUNDS}: {row:.1f} us per row "
          f"= {1e6 / row:,.0f} rows/s per core")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    with postgres_url() as url:
        asyncio.run(run(url, args.batches, args.batch))


if __name__ == "__main__":
    main()
