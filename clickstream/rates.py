"""`clickstream rates load FILE`: exchange rates for revenue in the reporting currency.

FILE is the European Central Bank's reference-rate CSV (`eurofxref-hist.csv`, or the daily
`eurofxref.csv`): a `Date` column, then one column per currency holding how many units of it
one euro bought that day, `N/A` where the ECB published none. Rows are converted to the
deployment's reporting currency (`CLICKSTREAM_REPORTING_CURRENCY`): a currency's rate is
`units of reporting per EUR / units of that currency per EUR` (the euro itself is 1), rounded to
`SIGNIFICANT_DIGITS`, and stored in `exchange_rates` (migration 220), replacing the rows of the
same days. The processor converts each order at the rate of its day (processor/currency.py);
orders processed before their rate was loaded stay counted apart, in their own currency.

A day on which the reporting currency itself has no rate gives no rate at all (nothing can be
converted to it that day). Settings come from the environment, else from the running local
stack (`clickstream up`), as for the other tools.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
from collections.abc import Iterable
from datetime import date
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from clickstream_contract.config import REPORTING_CURRENCY_ENV, Settings

BASE_CURRENCY: Final = "EUR"  # the ECB quotes every currency per euro
MISSING: Final = "N/A"
# Enough for any reference rate (the ECB publishes 5 or 6), and few enough that an amount
# (up to 12 digits) times a rate stays exact in Decimal's default 28-digit context.
SIGNIFICANT_DIGITS: Final = 10
_ROUNDING: Final = Context(prec=SIGNIFICANT_DIGITS)

UPSERT_SQL: Final = """
INSERT INTO exchange_rates (reporting_currency, currency, day, rate)
SELECT $1, * FROM unnest($2::text[], $3::date[], $4::numeric[])
ON CONFLICT (reporting_currency, currency, day) DO UPDATE SET rate = excluded.rate
"""

DayRates = tuple[date, dict[str, Decimal]]
Rate = tuple[str, date, Decimal]


class RatesFileError(ValueError):
    """The file is not in the ECB layout; the message names the line and the field."""


def parse_ecb_csv(lines: Iterable[str]) -> list[DayRates]:
    """Each day's rates as the file gives them: units of each currency per euro."""
    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader, [])]
    if not header or header[0] != "Date":
        raise RatesFileError("line 1: the header must start with Date (the ECB's CSV layout)")
    # The ECB's files end each line with a comma: an empty last column.
    currencies = header[1:]
    for column, name in enumerate(currencies, start=2):
        if name and not (len(name) == 3 and name.isalpha() and name.isupper()):
            raise RatesFileError(f"line 1, column {column}: {name!r} is not a currency code")
    days: list[DayRates] = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            day = date.fromisoformat(row[0].strip())
        except ValueError:
            raise RatesFileError(f"line {line}, Date: {row[0]!r} is not YYYY-MM-DD") from None
        rates: dict[str, Decimal] = {}
        for name, cell in zip(currencies, row[1:], strict=False):
            value = cell.strip()
            if not name or not value or value == MISSING:
                continue
            try:
                rate = Decimal(value)
            except InvalidOperation:
                raise RatesFileError(f"line {line}, {name}: {value!r} is not a number") from None
            if not rate.is_finite() or rate <= 0:
                raise RatesFileError(f"line {line}, {name}: {value!r} must be above 0")
            rates[name] = rate
        days.append((day, rates))
    return days


def to_reporting(days: Iterable[DayRates], reporting: str) -> list[Rate]:
    """(currency, day, units of `reporting` per unit of currency) for every rate the file
    allows, the euro included when it is not the reporting currency."""
    rates: list[Rate] = []
    for day, per_euro in days:
        per_euro = {**per_euro, BASE_CURRENCY: Decimal(1)}
        reporting_per_euro = per_euro.get(reporting)
        if reporting_per_euro is None:
            continue
        for currency, units in sorted(per_euro.items()):
            if currency != reporting:
                rates.append((currency, day, _ROUNDING.divide(reporting_per_euro, units)))
    return rates


async def store(database_url: str | None, reporting: str, rates: list[Rate]) -> None:
    from processor.db import connect

    conn = await connect(database_url)
    try:
        await conn.execute(
            UPSERT_SQL,
            reporting,
            [currency for currency, _, _ in rates],
            [day for _, day, _ in rates],
            [rate for _, _, rate in rates],
        )
    finally:
        await conn.close()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rates",
        help="exchange rates for revenue in the reporting currency",
        description="Exchange rates that convert order amounts to the reporting currency.",
    )
    commands = parser.add_subparsers(dest="rates_command", required=True)
    load = commands.add_parser(
        "load",
        help="load an ECB reference-rate CSV into PostgreSQL",
        description="Load FILE, the European Central Bank's reference-rate CSV (Date,USD,JPY,... "
        "rows of units per euro, N/A for none), converted to the reporting currency "
        f"({REPORTING_CURRENCY_ENV}, default {Settings.reporting_currency}). Days already "
        "loaded are replaced. DATABASE_URL and the reporting currency come from the environment, "
        "else from the running local stack.",
    )
    load.add_argument("file", type=Path, metavar="FILE", help="the ECB CSV (eurofxref-hist.csv)")
    load.set_defaults(func=run_load)


def run_load(args: argparse.Namespace) -> int:
    from clickstream.local_state import missing_setting, stack_env

    try:
        settings = Settings.from_env(stack_env())
    except ValueError as error:
        raise SystemExit(f"clickstream rates load: {error}") from None
    if settings.database_url is None:
        raise missing_setting("rates load", "DATABASE_URL")
    try:
        with args.file.open(newline="", encoding="utf-8-sig") as lines:
            days = parse_ecb_csv(lines)
    except (OSError, RatesFileError) as error:
        raise SystemExit(f"clickstream rates load: {args.file}: {error}") from None
    reporting = settings.reporting_currency
    rates = to_reporting(days, reporting)
    if days and not rates:
        raise SystemExit(
            f"clickstream rates load: {args.file}: no day has a rate for {reporting}, the "
            f"reporting currency ({REPORTING_CURRENCY_ENV})"
        )
    import asyncpg

    try:
        asyncio.run(store(settings.database_url, reporting, rates))
    except OSError as error:  # PostgreSQL unreachable
        raise SystemExit(f"clickstream rates load: {error}") from None
    except asyncpg.UndefinedTableError:
        raise SystemExit(
            "clickstream rates load: no exchange_rates table: run clickstream db migrate"
        ) from None
    currencies = len({currency for currency, _, _ in rates})
    print(f"loaded {len(rates)} rates of {currencies} currencies to {reporting}, {len(days)} days")
    return 0
