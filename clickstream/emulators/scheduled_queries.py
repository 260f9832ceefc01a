"""The local stand-in for customer_daily's scheduled query (terraform/bigquery.tf).

In production BigQuery Data Transfer runs processor/bigquery_views/customer_daily_merge.sql
every few hours. The emulator has no scheduler, so `clickstream emulator bigquery` runs the
same statement itself, every `--customer-daily-every` seconds, in each dataset of its project
that has a customer_daily table: `clickstream up`'s customer_analytics then lags by that
interval at most. Tests turn it off and refresh at times they choose.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from google.api_core.exceptions import NotFound

from clickstream_contract.config import Settings
from processor.bigquery_schema import CUSTOMER_DAILY, bigquery_client, refresh_customer_daily


async def refresh_customer_daily_every(
    interval: float, rest_url: str, project: str, appends: AbstractContextManager[object]
) -> None:
    """Refresh every customer_daily table of `project` every `interval` seconds, forever,
    holding `appends` (the emulator's append lock) meanwhile: its one DuckDB connection would
    refuse an append during the refresh's queries, or a query during an append."""

    def refresh() -> None:
        with appends:
            refresh_all(rest_url, project)

    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(refresh)
        except Exception as error:  # as the scheduler does, a failed run waits for the next
            print(f"customer_daily refresh failed: {error}", file=sys.stderr, flush=True)


def refresh_all(rest_url: str, project: str) -> None:
    client = bigquery_client(Settings(project=project, bigquery_emulator_host=rest_url))
    try:
        for dataset in client.list_datasets():
            try:
                client.get_table(f"{project}.{dataset.dataset_id}.{CUSTOMER_DAILY}")
            except NotFound:
                continue
            refresh_customer_daily(client, dataset.dataset_id, datetime.now(UTC))
    finally:
        client.close()
