"""Soak: the whole pipeline at a steady rate; memory stays flat, queues do not grow, and every
accepted event is reconciled at the end.

CI runs ~20 s; `CLICKSTREAM_SOAK_SECONDS=600` runs the 10-minute version (and
`CLICKSTREAM_SOAK_RATE` sets events/s). RSS is read from /proc (the gateway's Granian workers
summed with their parent), the publish queue from the gateway's /metrics, and the backlog as
events accepted by the gateway minus rows in PostgreSQL. Figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults_testing import Pipeline, events_stored, pipeline, rss_bytes

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The return_immediately flag")]

SECONDS = float(os.environ.get("CLICKSTREAM_SOAK_SECONDS", "20"))
RATE = float(os.environ.get("CLICKSTREAM_SOAK_RATE", "200"))
MB = 1024 * 1024


def metric(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def sample(p: Pipeline, client: httpx.AsyncClient, started: float) -> dict[str, Any]:
    assert p.gateway is not None and p.processor is not None
    text = (await client.get("/metrics")).text
    accepted = metric(text, 'gateway_events_total{outcome="accepted"}')
    stored = await events_stored(p.settings.database_url or "")
    return {
        "t": round(time.monotonic() - started, 1),
        "gateway_rss_mb": round(rss_bytes(p.gateway.proc.pid) / MB, 1),
        "processor_rss_mb": round(rss_bytes(p.processor.pid) / MB, 1),
        "queue_bytes": metric(text, "gateway_publish_queue_bytes"),
        "backlog": accepted - stored,
    }


def third(samples: list[dict[str, Any]], which: int) -> list[dict[str, Any]]:
    n = max(1, len(samples) // 3)
    return samples[which * n : (which + 1) * n] if which < 2 else samples[2 * n :]


@pytest.mark.timeout(SECONDS + 240)  # the suite's 300 s default would cut a long soak short
async def test_soak_memory_flat_and_queues_bounded(
    pubsub_emulator_host: str,
    bigquery_emulator: dict[str, str],
    fresh_database_url: str,
    tmp_path: Path,
) -> None:
    with pipeline(
        pubsub_host=pubsub_emulator_host,
        bigquery_hosts=bigquery_emulator,
        database_url=fresh_database_url,
        log_dir=tmp_path,
    ) as p:
        load = p.loadgen(rate=RATE, duration=SECONDS, batch_size=5, invalid_share=0.01)
        samples = []
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=p.url, timeout=10) as client:
            while load.proc.poll() is None:
                samples.append(await sample(p, client, started))
                await asyncio.sleep(max(1.0, SECONDS / 60))
            summary = await asyncio.to_thread(load.wait)
            reconciled = await p.reconcile(load.ids_file)
            samples.append(await sample(p, client, started))  # drained
    (tmp_path / "soak-samples.json").write_text(json.dumps(samples))  # kept for a failed run
    report = reconciled.report
    assert report.ok, report.text()
    assert reconciled.mismatches == {}
    assert reconciled.extra_events <= summary["failed"]
    assert len(samples) >= 6

    first, last = third(samples, 0), third(samples, 2)
    figures: dict[str, Any] = {
        "seconds": summary["seconds"],
        "events_accepted": summary["accepted"],
        "events_reconciled": len(report.unique),
        "failed": summary["failed"],
        "latency_ms": summary["latency_ms"],
    }
    for name in ("gateway_rss_mb", "processor_rss_mb"):
        warm = max(s[name] for s in first)
        end = max(s[name] for s in last)
        figures[name] = {"start": samples[0][name], "after_warmup": warm, "end": end}
        # Flat: the last third stays within a quarter (and 30 MB) of the warmed-up size.
        assert end <= warm * 1.25 + 30, (name, figures[name])
    # Queues bounded: no growth from the first third to the last, and drained at the end.
    for name, slack in (("queue_bytes", 256 * 1024), ("backlog", 2 * RATE)):
        early = max(s[name] for s in first)
        late = max(s[name] for s in last[:-1] or last)
        figures[name] = {"max_first_third": early, "max_last_third": late}
        assert late <= early + slack, (name, figures[name])
    assert samples[-1]["queue_bytes"] == 0
    assert samples[-1]["backlog"] <= summary["rejected"]  # refused events never reach `events`
    print(json.dumps(figures))
