"""`clickstream rates load FILE`: the ECB reference-rate CSV converted to the reporting
currency, errors that name the line and field, and the command against a running local stack's
database with no variable exported (its state folder's stack.json)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from clickstream.local_state import STATE_DIR_ENV, write_stack_env
from clickstream.rates import RatesFileError, parse_ecb_csv, to_reporting
from processor.migrations import migrate

# As the ECB publishes it: newest first, a trailing comma on every line.
ECB_CSV = """Date,USD,JPY,GBP,
2026-03-02,1.0800,N/A,0.8500,
2026-02-27,1.0500,160.00,N/A,
"""


def test_the_ecb_layout_is_read_with_missing_rates_left_out() -> None:
    assert parse_ecb_csv(io.StringIO(ECB_CSV)) == [
        (date(2026, 3, 2), {"USD": Decimal("1.0800"), "GBP": Decimal("0.8500")}),
        (date(2026, 2, 27), {"USD": Decimal("1.0500"), "JPY": Decimal("160.00")}),
    ]


def test_rates_are_converted_to_the_reporting_currency() -> None:
    days = parse_ecb_csv(io.StringIO(ECB_CSV))
    assert to_reporting(days, "EUR") == [
        ("GBP", date(2026, 3, 2), Decimal("1.176470588")),  # 1 / 0.85, 10 digits
        ("USD", date(2026, 3, 2), Decimal("0.9259259259")),
        ("JPY", date(2026, 2, 27), Decimal("0.00625")),
        ("USD", date(2026, 2, 27), Decimal("0.9523809524")),
    ]
    # In USD: the euro is a currency like the others; a day without a USD rate gives none.
    assert to_reporting(days, "USD")[:3] == [
        ("EUR", date(2026, 3, 2), Decimal("1.08")),
        ("GBP", date(2026, 3, 2), Decimal("1.270588235")),  # 1.08 / 0.85
        ("EUR", date(2026, 2, 27), Decimal("1.05")),
    ]
    assert [day for _, day, _ in to_reporting(days, "GBP")] == [date(2026, 3, 2)] * 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("When,USD\n", "line 1: the header must start with Date"),
        ("Date,usd\n", "line 1, column 2: 'usd' is not a currency code"),
        ("Date,USD\n02/03/2026,1.08\n", "line 2, Date: '02/03/2026' is not YYYY-MM-DD"),
        ("Date,USD\n2026-03-02,1,08\n", None),  # an extra column past the header: ignored
        ("Date,USD\n2026-03-02,one\n", "line 2, USD: 'one' is not a number"),
        ("Date,USD\n2026-03-02,0\n", "line 2, USD: '0' must be above 0"),
    ],
)
def test_a_file_not_in_the_layout_is_refused_naming_line_and_field(
    text: str, error: str | None
) -> None:
    if error is None:
        assert parse_ecb_csv(io.StringIO(text)) == [(date(2026, 3, 2), {"USD": Decimal(1)})]
        return
    with pytest.raises(RatesFileError) as refused:
        parse_ecb_csv(io.StringIO(text))
    assert str(refused.value).startswith(error)


async def test_load_joins_the_running_local_stack(fresh_database_url: str, tmp_path: Path) -> None:
    await migrate(fresh_database_url)
    state = tmp_path / "state"
    state.mkdir()
    # What `clickstream up` records (its pid: this process, alive), the shop's currency in it.
    write_stack_env(
        state, {"DATABASE_URL": fresh_database_url, "CLICKSTREAM_REPORTING_CURRENCY": "USD"}
    )
    rates = tmp_path / "eurofxref-hist.csv"
    rates.write_text(ECB_CSV)
    done = await asyncio.to_thread(load, rates, state)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "loaded 4 rates of 3 currencies to USD, 2 days\n"
    conn = await asyncpg.connect(fresh_database_url)
    try:
        rows = await conn.fetch(
            "SELECT reporting_currency, currency, day, rate FROM exchange_rates ORDER BY 3, 2"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows][:2] == [
        ("USD", "EUR", date(2026, 2, 27), Decimal("1.05")),
        ("USD", "JPY", date(2026, 2, 27), Decimal("0.0065625")),
    ]

    # Loading again replaces the days' rates; a missing file is one line, not a traceback.
    assert (await asyncio.to_thread(load, rates, state)).returncode == 0
    missing = await asyncio.to_thread(load, tmp_path / "missing.csv", state)
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1 and "missing.csv" in missing.stderr


def load(rates: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """`clickstream rates load` with no DATABASE_URL nor currency set: the stack's state folder."""
    names = ("DATABASE_URL", "CLICKSTREAM_REPORTING_CURRENCY")
    env = {k: v for k, v in os.environ.items() if k not in names}
    return subprocess.run(
        [sys.executable, "-m", "clickstream_contract.cli", "rates", "load", str(rates)],
        env={**env, STATE_DIR_ENV: str(state)},
        capture_output=True,
        text=True,
    )
