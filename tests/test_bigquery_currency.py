"""Revenue in the reporting currency in BigQuery, written by the real processor (PostgreSQL,
then BigQuery on the emulator): each purchase row keeps its amount and currency as sent and
carries the conversion PostgreSQL's aggregates count (processor/currency.py, one code path),
NULL without a rate; customer_daily and customer_analytics sum converted amounts only and
count the other orders apart, also after a redelivery appended the rows twice."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
from google.cloud import bigquery
from processor_testing import BASE_TIME
from test_bigquery_sink import emulator_settings
from test_currency import DAY, ORDERS, load_rates, message

from processor.bigquery import create_sink
from processor.bigquery_schema import bigquery_client, refresh_customer_daily
from processor.core import Processor
from processor.postgres import PostgresSink


def rows(client: bigquery.Client, sql: str) -> list[tuple[object, ...]]:
    return [tuple(row.values()) for row in client.query(sql).result()]


async def test_bigquery_sums_the_conversions_postgresql_counts_and_keeps_the_rest_apart(
    pool: asyncpg.Pool, bigquery_emulator: dict[str, str]
) -> None:
    settings = emulator_settings(bigquery_emulator, f"t_{uuid.uuid4().hex[:10]}")
    await load_rates(pool, "EUR")
    sink = await create_sink(settings)
    try:
        processor = Processor(PostgresSink(pool, "EUR"), [sink])
        # The first two orders twice in the batch (a gateway's retry beside its first try):
        # each sink takes them once.
        await processor.process([message(ORDERS), message(ORDERS[:2])])
        # Redelivered: PostgreSQL has them already, BigQuery appends them again and the copies
        # carry the same conversion.
        await processor.process([message(ORDERS[1:3])])
    finally:
        await sink.close()

    client = bigquery_client(settings)
    dataset = f"`{settings.project}.{settings.bigquery_dataset}`"
    events = rows(
        client,
        f"SELECT order_id, revenue, currency, revenue_reporting, reporting_currency"
        f" FROM {dataset}.events WHERE event_type = 'purchase'",
    )
    by_order = {order_id: rest for order_id, *rest in events}
    assert len(events) == len(ORDERS) + 2 and len(by_order) == len(ORDERS)
    assert len(set(events)) == len(ORDERS)  # each redelivered copy equals its first row
    expected = [
        Decimal("19.00"),  # EUR: as sent
        Decimal("100.00"),  # USD at its day's 1.08
        Decimal("20.00"),  # Sunday: Friday's 1.05
        Decimal("100.00"),  # JPY: Friday's 160, the day's being N/A
        Decimal("10.00"),  # 6 days on: Monday's rate
        None,  # 7 days on: no rate
        None,  # CHF: no rate at all
    ]
    assert [by_order[o["order"]["order_id"]] for o in ORDERS] == [
        [o["order"]["revenue"], o["order"]["currency"], converted, "EUR"]
        for o, converted in zip(ORDERS, expected, strict=True)
    ]
    # The same cents as PostgreSQL's aggregates and unconverted orders.
    converted_total = sum(c for c in expected if c is not None)
    assert await pool.fetchval("SELECT sum(revenue) FROM metrics_minute") == converted_total
    assert await pool.fetchval("SELECT sum(orders) FROM unconverted_revenue_hour") == 2

    refresh_customer_daily(client, settings.bigquery_dataset, BASE_TIME + 8 * DAY, days=10)
    daily = rows(
        client,
        f"SELECT day, revenue, reporting_currency, IFNULL(ARRAY_LENGTH(unconverted_order_ids), 0)"
        f" FROM {dataset}.customer_daily ORDER BY day",
    )
    assert [(day, revenue, unconverted) for day, revenue, _, unconverted in daily] == [
        ((BASE_TIME - DAY).date(), Decimal("20.00"), 0),
        (BASE_TIME.date(), Decimal("219.00"), 1),  # CHF apart
        ((BASE_TIME + 6 * DAY).date(), Decimal("10.00"), 0),
        ((BASE_TIME + 7 * DAY).date(), Decimal("0"), 1),  # the USD order without a rate
    ]
    assert {currency for _, _, currency, _ in daily} == {"EUR"}
    analytics = rows(
        client,
        f"SELECT orders, lifetime_value, reporting_currency, unconverted_orders"
        f" FROM {dataset}.customer_analytics",
    )
    assert analytics == [(len(ORDERS), converted_total, "EUR", 2)]

    # Read in another reporting currency (a deployment that changed its setting), none of these
    # EUR conversions is summed: every order is counted apart until converted again.
    refresh_customer_daily(
        client, settings.bigquery_dataset, BASE_TIME + 8 * DAY, days=10, reporting_currency="USD"
    )
    analytics = rows(
        client, f"SELECT lifetime_value, unconverted_orders FROM {dataset}.customer_analytics"
    )
    assert analytics == [(Decimal("0"), len(ORDERS))]
    client.close()
