"""The sinks after PostgreSQL, chosen by configuration (today: BigQuery).

`CLICKSTREAM_BIGQUERY` = `on` | `off` | `auto` (default). `auto` writes to BigQuery when an
emulator (`BIGQUERY_EMULATOR_HOST`) or a real project (`GOOGLE_CLOUD_PROJECT`) is configured.
With BigQuery off, messages are acked after PostgreSQL alone.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping

from clickstream_contract.config import BIGQUERY_ENV, LOCAL_PROJECT, Settings
from processor.core import Sink

log = logging.getLogger(__name__)


def bigquery_enabled(settings: Settings, env: Mapping[str, str] = os.environ) -> bool:
    mode = (env.get(BIGQUERY_ENV) or "auto").lower()
    if mode not in ("on", "off", "auto"):
        raise ValueError(f"{BIGQUERY_ENV} must be on, off or auto, not {mode!r}")
    if mode == "auto":
        return settings.bigquery_emulator_host is not None or settings.project != LOCAL_PROJECT
    return mode == "on"


async def other_sinks(settings: Settings, env: Mapping[str, str] = os.environ) -> list[Sink]:
    if not bigquery_enabled(settings, env):
        return []
    if importlib.util.find_spec("processor.bigquery") is None:
        # The BigQuery sink is a separate module; until it is installed only PostgreSQL is fed.
        if (env.get(BIGQUERY_ENV) or "auto").lower() == "on":
            raise RuntimeError(f"{BIGQUERY_ENV}=on but processor.bigquery is not available")
        log.warning("BigQuery is configured but processor.bigquery is missing: PostgreSQL only")
        return []
    from processor import bigquery

    sink: Sink = await bigquery.create_sink(settings)
    return [sink]
