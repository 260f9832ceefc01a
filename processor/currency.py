"""Amounts in the deployment's reporting currency (`CLICKSTREAM_REPORTING_CURRENCY`).

Every order amount is converted at the rate of its event's UTC day from `exchange_rates`
(migration 220, loaded by `clickstream rates load`). Reference rates are published on working
days only, so a day without a rate takes the latest earlier one within `FALLBACK_DAYS` days
(a weekend or holiday). An amount in the reporting currency itself (or with no currency, which
the contract allows only on products) is taken as it is. An amount whose currency has no rate
in that window is not converted: the sink counts it apart, in its own currency
(`unconverted_revenue_hour`), and leaves it out of every revenue aggregate.

Converted amounts are rounded half up to cents, per amount, before they are summed, so any
sum of them is exact and a recount from the events gives the same cents.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Final

from processor.db import Connection

# How many days back a missing day's rate may come from (ECB: weekends, TARGET holidays).
FALLBACK_DAYS: Final = 7

_CENT: Final = Decimal("0.01")
# Products are exact whatever the digits of a float price (up to 17) times a quantity and a
# rate: as PostgreSQL's numeric multiplies, so a recount in SQL gives the same cents.
_EXACT: Final = Context(prec=64)

# Per (currency, day) asked: the newest rate on that day or up to FALLBACK_DAYS - 1 days before.
RATES_SQL: Final = """
SELECT DISTINCT ON (q.currency, q.day) q.currency, q.day, r.rate
FROM unnest($2::text[], $3::date[]) AS q(currency, day)
JOIN exchange_rates r
  ON r.reporting_currency = $1 AND r.currency = q.currency
 AND r.day <= q.day AND r.day > q.day - $4::int
ORDER BY q.currency, q.day, r.day DESC
"""


class Rates:
    """The rates one batch needs: (currency, day) -> units of the reporting currency per unit."""

    def __init__(self, reporting: str, rates: dict[tuple[str, date], Decimal]) -> None:
        self.reporting = reporting
        self.rates = rates

    def convert(self, amount: Decimal, currency: str | None, day: date) -> Decimal | None:
        """`amount` in the reporting currency, or None when its currency has no rate."""
        if currency is None or currency == self.reporting:
            return amount
        rate = self.rates.get((currency, day))
        if rate is None:
            return None
        return _EXACT.multiply(amount, rate).quantize(_CENT, ROUND_HALF_UP, _EXACT)


async def rates_for(
    conn: Connection, reporting: str, wanted: Iterable[tuple[str | None, date]]
) -> Rates:
    """Read the rates of the (currency, day) pairs that need converting (one query, none when
    every amount is already in the reporting currency)."""
    keys = sorted({(c, d) for c, d in wanted if c is not None and c != reporting})
    if not keys:
        return Rates(reporting, {})
    rows = await conn.fetch(
        RATES_SQL, reporting, [c for c, _ in keys], [d for _, d in keys], FALLBACK_DAYS
    )
    return Rates(reporting, {(row[0], row[1]): row[2] for row in rows})
