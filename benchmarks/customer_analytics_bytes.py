"""What a customer_analytics query reads in BigQuery before and after customer_daily, counted
by BigQuery's data-size rules (what on-demand pricing bills), on the BigQuery emulator.

    .venv/bin/python benchmarks/customer_analytics_bytes.py [--visitors 4000] [--days 30]

Writes synthetic events through the processor's sink (Storage Write API): each visitor is
active on 3 of `--days` days, with 1-2 sessions of 5-15 events a day and a purchase in one
session of four. Then counts the bytes of the columns each statement reads, over the rows it
reads: the former view (every partition of `events`, deduplicated), the view over
customer_daily, and one scheduled refresh (its window of `events` partitions plus the
customer_daily partitions it rewrites). A count, not a timing: the machine does not matter.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clickstream.emulators.bigquery import start_in_subprocess
from clickstream.emulators.launch import stop_process
from clickstream_contract.config import Settings
from processor.bigquery import create_sink
from processor.bigquery_schema import (
    CUSTOMER_DAILY_REFRESH_DAYS,
    bigquery_client,
    refresh_customer_daily,
)
from processor.records import EnrichedEvent

# BigQuery's sizes: STRING 2 + its bytes, INT64/FLOAT64/TIMESTAMP/DATE 8, NULL nothing.
STRING = "COALESCE(2 + BYTE_LENGTH({0}), 0)"
FIXED = "IF({0} IS NULL, 0, 8)"
# The columns of `events` a customer rollup reads: the dedup key and order, and the rolled-up.
EVENT_COLUMNS = " + ".join(
    [STRING.format(c) for c in ("event_id", "visitor_key", "user_id", "session_id")]
    + [STRING.format(c) for c in ("event_type", "order_id")]
    + [FIXED.format(c) for c in ("received_at", "occurred_at", "revenue")]
)
IDS = "(SELECT COALESCE(SUM(2 + BYTE_LENGTH(i)), 0) FROM UNNEST({0}) AS i)"
# customer_analytics reads every column of customer_daily but `day`; the refresh all of them.
VIEW_COLUMNS = " + ".join(
    [STRING.format(c) for c in ("visitor_key", "user_id")]
    + [FIXED.format(c) for c in ("first_seen_at", "last_seen_at", "events", "revenue")]
    + [FIXED.format("last_order_at"), IDS.format("session_ids"), IDS.format("order_ids")]
)
DAILY_COLUMNS = f"{VIEW_COLUMNS} + 8"


def synthetic_events(visitors: int, days: int, end: datetime) -> list[EnrichedEvent]:
    rng = random.Random(7)
    events = []
    for v in range(visitors):
        visitor = f"visitor-{v:06d}"
        for day in rng.sample(range(days), 3):
            for s in range(rng.randint(1, 2)):
                session = f"{visitor}-{day}-{s}"
                start = end - timedelta(days=day + 1, seconds=rng.randint(0, 80_000))
                buys = rng.random() < 0.25
                count = rng.randint(5, 15)
                for n in range(count):
                    purchase = buys and n == count - 1
                    events.append(
                        EnrichedEvent(
                            event_id=uuid.UUID(int=rng.getrandbits(128)),
                            event_type="purchase" if purchase else "page_view",
                            occurred_at=start + timedelta(seconds=30 * n),
                            received_at=start + timedelta(seconds=30 * n + 1),
                            source="web",
                            visitor_key=visitor,
                            anonymous_id=visitor,
                            user_id=None,
                            session_id=session,
                            order_id=f"order-{session}" if purchase else None,
                            revenue=round(rng.uniform(10, 200), 2) if purchase else None,
                        )
                    )
    return events


async def main(visitors: int, days: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        proc, hosts = start_in_subprocess(Path(folder) / "emulator.log")
        try:
            settings = Settings(
                bigquery_dataset="bench",
                bigquery_emulator_host=hosts["BIGQUERY_EMULATOR_HOST"],
                bigquery_storage_emulator_host=hosts["BIGQUERY_STORAGE_EMULATOR_HOST"],
            )
            now = datetime.now(UTC)
            events = synthetic_events(visitors, days, now)
            sink = await create_sink(settings)
            try:
                for first in range(0, len(events), 5000):
                    await sink.write(events[first : first + 5000], [])
            finally:
                await sink.close()
            client = bigquery_client(settings)
            # Every day once (a backfill), as months of scheduled runs would have left it.
            refresh_customer_daily(client, "bench", now, days=days + 1)
            events_table = f"`{settings.project}.bench.events`"
            daily_table = f"`{settings.project}.bench.customer_daily`"
            window_start = f"DATE_SUB(CURRENT_DATE(), INTERVAL {CUSTOMER_DAILY_REFRESH_DAYS} DAY)"
            counts = {
                "events rows": f"SELECT COUNT(*) FROM {events_table}",
                "customer_daily rows": f"SELECT COUNT(*) FROM {daily_table}",
                "bytes: former view (all events)": f"SELECT SUM({EVENT_COLUMNS}) "
                f"FROM {events_table}",
                "bytes: view over customer_daily": f"SELECT SUM({VIEW_COLUMNS}) FROM {daily_table}",
                "bytes: refresh, events in window": f"SELECT SUM({EVENT_COLUMNS}) "
                f"FROM {events_table} WHERE occurred_at >= TIMESTAMP({window_start})",
                "bytes: refresh, customer_daily in window": f"SELECT SUM({DAILY_COLUMNS}) "
                f"FROM {daily_table} WHERE day >= {window_start}",
            }
            print(f"visitors={visitors} days={days} window={CUSTOMER_DAILY_REFRESH_DAYS}+1 days")
            for name, sql in counts.items():
                (row,) = client.query(sql).result()
                print(f"{name:42} {row[0]:>14,}")
            client.close()
        finally:
            stop_process(proc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=4000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.visitors, args.days))
