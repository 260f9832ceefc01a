"""The floor under the processor's per-core targets: what the least possible work costs here.

    .venv/bin/python benchmarks/processor_floor.py [--batches 5] [--batch 20000]

Issue #4 asks for 100k events/s per core (10 us of CPU per event) through decode + enrich +
PostgreSQL sink, and 300k protobuf rows/s per core (3.3 us per row). This measures parts that
any design meeting the issue must pay, each alone, on the shoppers workload, best of several
rounds (CPU time):

- decode + validate: the contract's msgspec decoder on each event's JSON, nothing else;
- COPY, client: asyncpg's binary encoding of the enriched rows (every `events` column);
- COPY, server: PostgreSQL storing them in a table shaped like `events` with only its primary
  key (`event_id`): no aggregate, no other index, no session;
- protobuf: the row encoder's straight-line code on values converted beforehand (UUIDs and
  timestamps): upb setting each non-null field and serializing the row.

If the first three add up to more than 10 us, no sink that keeps events keyed by `event_id` in
PostgreSQL can meet the first target on this machine; likewise the last against 3.3 us.
Against DATABASE_URL or a throwaway pgserver; the server's CPU is read from /proc when it runs
on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg
import msgspec
from processor_throughput import local_postmaster, server_cpu
from processor_workload import batches

from clickstream.local_postgres import postgres_url
from clickstream_contract import envelope
from clickstream_contract.event import Event
from clickstream_contract.gc_tuning import tune_after_startup
from processor.bigquery_rows import CONVERSIONS, EVENT_ROWS, compile_encoder
from processor.bigquery_schema import Column
from processor.core import Message, decode
from processor.migrations import migrate
from processor.records import EnrichedEvent

ROUNDS = 5
astuple = msgspec.structs.astuple
# A raw row per event (the sink before migration 201 wrote one, and any design keeping events
# keyed by `event_id` must): every EnrichedEvent field, with the cheapest wire types, keyed by
# event_id.
EVENT_COLUMNS = tuple(EnrichedEvent.__struct_fields__)
INCOMING_TYPES = {
    "event_id": "uuid",
    "occurred_at": "timestamptz",
    "received_at": "timestamptz",
    "is_bot": "boolean",
    "price": "float8",
    "quantity": "integer",
    "revenue": "float8",
}
FLOOR_TABLE_SQL = f"""CREATE TABLE events_floor (
    {", ".join(f"{name} {INCOMING_TYPES.get(name, 'text')}" for name in EVENT_COLUMNS)},
    PRIMARY KEY (event_id))"""


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


async def copy_floor(
    database_url: str, rows: list[list[tuple[object, ...]]]
) -> tuple[float, float]:
    """(client, server) CPU seconds to COPY `rows` into `events_floor`, best of ROUNDS."""
    conn = await asyncpg.connect(database_url)
    postmaster = local_postmaster(conn.get_server_pid())
    best_client = best_server = float("inf")
    try:
        for _ in range(ROUNDS):
            await conn.execute(f"DROP TABLE IF EXISTS events_floor; {FLOOR_TABLE_SQL}")
            server, client = server_cpu(postmaster) if postmaster else 0.0, time.process_time()
            for batch in rows:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "events_floor", records=batch, columns=EVENT_COLUMNS
                    )
            best_client = min(best_client, time.process_time() - client)
            if postmaster:
                best_server = min(best_server, server_cpu(postmaster) - server)
        await conn.execute("DROP TABLE events_floor")
    finally:
        await conn.close()
    return best_client, best_server if postmaster else float("nan")


async def run(database_url: str, count: int, size: int) -> None:
    await migrate(database_url)
    tune_after_startup()  # as the worker does once started
    stream = batches("shoppers", size)
    decode(next(stream))  # warm the enrichment caches
    work = [next(stream) for _ in range(count)]
    bodies = [event_bodies(messages) for messages in work]
    events = [decode(messages).events for messages in work]
    n = sum(len(batch) for batch in events)

    validate = msgspec.json.Decoder(Event).decode
    decode_cpu = best_cpu(lambda: [validate(raw) for batch in bodies for raw in batch])
    rows = [[astuple(event) for event in batch] for batch in events]
    copy_client, copy_server = await copy_floor(database_url, rows)

    protobuf_cpu = protobuf_floor([event for batch in events for event in batch])

    per_event = {
        "decode + validate (no enrichment)": decode_cpu,
        "COPY, client encoding": copy_client,
        "COPY, server, primary key only": copy_server,
    }
    print(f"shoppers workload: {count} batches of {size} ({n} events), best of {ROUNDS}")
    for name, seconds in per_event.items():
        print(f"  {name:36s} {seconds / n * 1e6:5.1f} us per event")
    floor = sum(per_event.values()) / n * 1e6
    print(f"  {'floor of the PostgreSQL path':36s} {floor:5.1f} us per event "
          f"= {1e6 / floor:,.0f} events/s per core (target 100,000: 10.0 us)")  # fmt: skip
    row = protobuf_cpu / n * 1e6
    print(f"  {'protobuf build + serialize':36s} {row:5.1f} us per row "
          f"= {1e6 / row:,.0f} rows/s per core (target 300,000: 3.3 us)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    with postgres_url() as url:
        asyncio.run(run(url, args.batches, args.batch))


if __name__ == "__main__":
    main()
