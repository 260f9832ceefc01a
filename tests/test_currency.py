"""Revenue in the reporting currency (processor/currency.py) with real PostgreSQL: each order
converted at the rate of its day or the latest earlier one within 7 days, orders without a
rate counted apart in their own currency, aggregates exact against an independent recount
(processor_testing.aggregate_mismatches) also after a redelivery, the order's own amount and
currency kept on the timeline, and the dashboard naming what was left out."""

from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import asyncpg
import pytest
from processor_testing import BASE_TIME, aggregate_mismatches, envelope_of, event

from clickstream.rates import parse_ecb_csv, to_reporting
from clickstream_contract import envelope
from clickstream_contract.config import Settings
from dashboard import queries
from dashboard.ranges import TimeRange
from processor.core import Message, Processor
from processor.currency import Rates
from processor.postgres import PostgresSink

# BASE_TIME is Monday 2026-03-02. The ECB publishes newest first, nothing on weekends.
RATES_CSV = """Date,USD,JPY,GBP,
2026-03-02,1.0800,N/A,0.8500,
2026-02-27,1.0500,160.00,0.8400,
"""


async def load_rates(pool: asyncpg.Pool, reporting: str) -> None:
    rates = to_reporting(parse_ecb_csv(io.StringIO(RATES_CSV)), reporting)
    await pool.executemany(
        "INSERT INTO exchange_rates (reporting_currency, currency, day, rate)"
        " VALUES ($1, $2, $3, $4)",
        [(reporting, *rate) for rate in rates],
    )


def purchase(at: datetime, revenue: float, currency: str, price: float) -> dict[str, Any]:
    order = {
        "order_id": f"O-{uuid.uuid4().hex[:8]}",
        "revenue": revenue,
        "currency": currency,
        "items": [{"product_id": "sku-1", "price": price, "quantity": 2}],
    }
    return event("purchase", at=at, anonymous_id="shopper", user_id="u-1", order=order)


def message(events: list[dict[str, Any]]) -> Message:
    return Message(
        message_id=uuid.uuid4().hex,
        data=envelope_of(events),
        attributes=envelope.attributes("events", len(events)),
    )


DAY = timedelta(days=1)
ORDERS = [
    purchase(BASE_TIME, 19.00, "EUR", 9.50),  # the reporting currency: as sent
    purchase(BASE_TIME, 108.00, "USD", 54.00),  # its day's rate: 1 / 1.08
    purchase(BASE_TIME - DAY, 21.00, "USD", 10.50),  # Sunday: Friday's rate, 1 / 1.05
    purchase(BASE_TIME, 16000.00, "JPY", 8000.00),  # N/A that day: Friday's, 1 / 160
    purchase(BASE_TIME + 6 * DAY, 10.80, "USD", 5.40),  # 6 days on: still Monday's rate
    purchase(BASE_TIME + 7 * DAY, 33.00, "USD", 16.50),  # 7 days on: no rate
    purchase(BASE_TIME, 50.00, "CHF", 25.00),  # a currency the file has not
]


async def test_orders_are_converted_at_their_days_rate_and_the_rest_kept_apart(
    pool: asyncpg.Pool,
) -> None:
    await load_rates(pool, "EUR")
    processor = Processor(PostgresSink(pool, "EUR"))
    await processor.process([message(ORDERS)])
    await processor.process([message(ORDERS[1:3])])  # the same events again: no change

    profile = await pool.fetchrow("SELECT orders, lifetime_value FROM customers")
    assert profile is not None
    # 19.00 + 100.00 + 20.00 + 100.00 + 10.00; the USD order of day 7 and the CHF one counted,
    # their amounts not.
    assert (profile["orders"], profile["lifetime_value"]) == (7, Decimal("249.00"))
    assert await pool.fetchval("SELECT sum(revenue) FROM metrics_minute") == Decimal("249.00")
    assert await pool.fetchval("SELECT sum(revenue) FROM sessions") == Decimal("249.00")
    products = await pool.fetchval("SELECT sum(revenue) FROM product_metrics_hour")
    assert products == Decimal("249.00")  # the items, converted the same way
    unconverted = await pool.fetch(
        "SELECT hour, currency, orders, revenue FROM unconverted_revenue_hour ORDER BY 2"
    )
    assert [tuple(row) for row in unconverted] == [
        (BASE_TIME, "CHF", 1, Decimal("50.00")),
        (BASE_TIME + 7 * DAY, "USD", 1, Decimal("33.00")),
    ]
    async with pool.acquire() as conn:
        assert await aggregate_mismatches(cast(asyncpg.Connection, conn), ORDERS * 2) == {}

    # The timeline keeps what the shop sent.
    [activity] = await pool.fetch("SELECT events FROM visitor_activity")
    sent = {(e["order_id"], e["revenue"], e["currency"]) for e in json.loads(activity["events"])}
    assert (ORDERS[1]["order"]["order_id"], 108.0, "USD") in sent

    # The dashboard: revenue in EUR, the orders without a rate named apart.
    week = TimeRange(BASE_TIME - DAY, BASE_TIME + 8 * DAY, "custom")
    kpis = await queries.kpis(pool, week, BASE_TIME + 8 * DAY)
    assert kpis["kpis"]["revenue"]["value"] == 249.0
    assert kpis["kpis"]["average_order_value"]["value"] == 49.8  # the 5 converted orders
    assert kpis["unconverted"] == [
        {"currency": "CHF", "orders": 1, "revenue": 50.0},
        {"currency": "USD", "orders": 1, "revenue": 33.0},
    ]
    monday = TimeRange(BASE_TIME, BASE_TIME + timedelta(hours=1), "custom")
    assert [row["currency"] for row in await queries.unconverted_revenue(pool, monday)] == ["CHF"]


def test_a_reporting_currency_that_is_no_iso_code_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="CLICKSTREAM_REPORTING_CURRENCY must be a three-letter"):
        Settings.from_env({"CLICKSTREAM_REPORTING_CURRENCY": "euro"})
    assert Settings.from_env({}).reporting_currency == "EUR"


def test_an_amount_is_converted_then_rounded_to_cents() -> None:
    day = BASE_TIME.date()
    rates = Rates("EUR", {("USD", day): Decimal("0.9259259259")})
    line = Decimal(repr(0.1234567890123456)) * 9999  # a float price's 16 digits x a quantity
    assert rates.convert(line, "USD", day) == Decimal("1143.00")  # 1143.0041049...
    assert rates.convert(Decimal("0.54"), "USD", day) == Decimal("0.50")  # 0.49999... up
    assert rates.convert(line, "EUR", day) == rates.convert(line, None, day) == line  # as is
    assert rates.convert(line, "GBP", day) is None
    assert rates.convert(line, "USD", day + DAY) is None  # only the days asked were read


async def test_the_reporting_currency_comes_from_the_deployments_setting(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLICKSTREAM_REPORTING_CURRENCY", "USD")
    await load_rates(pool, "EUR")  # another deployment's rates: never read
    await load_rates(pool, "USD")
    orders = [purchase(BASE_TIME, 10.00, "EUR", 5.00), purchase(BASE_TIME, 8.50, "GBP", 4.25)]
    await Processor(PostgresSink(pool)).process([message(orders)])

    # 10.00 EUR x 1.08 = 10.80 USD; 8.50 GBP x (1.08 / 0.85) = 10.80 USD.
    assert await pool.fetchval("SELECT lifetime_value FROM customers") == Decimal("21.60")
    async with pool.acquire() as conn:
        assert await aggregate_mismatches(cast(asyncpg.Connection, conn), orders) == {}
