"""End-to-end append rate into the BigQuery emulator, and which side limits it.

    .venv/bin/python benchmarks/bigquery_append.py [--rows 60000] [--batch 5000]

Starts `clickstream emulator bigquery` on free ports, creates the tables, then writes `--rows`
page-view events through BigQuerySink in batches of `--batch` (one `write` per batch, as the
processor does). Reports rows/s overall and per batch, and the CPU seconds spent by this
process (encoding, gRPC client) and by the emulator: the side whose CPU time is close to the
wall time is the one that limits. Bounded: it stops after --rows or --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_bigquery_bench import page_view

from clickstream.emulators.bigquery import start_in_subprocess
from clickstream.emulators.launch import stop_process
from clickstream_contract.config import Settings
from processor.bigquery import create_sink


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    settings: Settings, emulator_pid: int, rows: int, batch: int, max_seconds: float
) -> None:
    sink = await create_sink(settings)
    events = [page_view(n) for n in range(rows)]
    rates = []
    client_cpu, emulator_cpu = time.process_time(), cpu_seconds(emulator_pid)
    started = time.perf_counter()
    written = 0
    try:
        for start in range(0, rows, batch):
            chunk = events[start : start + batch]
            t = time.perf_counter()
            await sink.write(chunk, [])
            rates.append(len(chunk) / (time.perf_counter() - t))
            written += len(chunk)
            if time.perf_counter() - started > max_seconds:
                break
    finally:
        await sink.close()
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    emulator_cpu = cpu_seconds(emulator_pid) - emulator_cpu
    print(f"rows written      {written} in {wall:.2f} s: {written / wall:,.0f} rows/s")
    print(f"per batch rows/s  first {rates[0]:,.0f}, last {rates[-1]:,.0f} ({len(rates)} batches)")
    print(
        f"CPU seconds       client {client_cpu:.2f}, emulator {emulator_cpu:.2f}, wall {wall:.2f}"
    )
    limiting = "emulator" if emulator_cpu > client_cpu else "client"
    print(f"limiting side     {limiting}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bq-bench-") as tmp:
        proc, hosts = start_in_subprocess(Path(tmp) / "emulator.log")
        try:
            settings = Settings(
                project="bench",
                bigquery_dataset="bench",
                bigquery_emulator_host=hosts["BIGQUERY_EMULATOR_HOST"],
                bigquery_storage_emulator_host=hosts["BIGQUERY_STORAGE_EMULATOR_HOST"],
            )
            asyncio.run(run(settings, proc.pid, args.rows, args.batch, args.max_seconds))
        finally:
            stop_process(proc)


if __name__ == "__main__":
    main()
