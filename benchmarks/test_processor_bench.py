"""Processor hot path per core: decode + validate + enrich, and the PostgreSQL batch write.

    .venv/bin/pytest benchmarks/test_processor_bench.py --benchmark-enable

Target: >= 100k events/s per core through decode + enrich + PostgreSQL sink. Workloads
(benchmarks/processor_workload.py): `shoppers` (the load generator's shopper model, realistic)
and `worst` (nearly every event its session's and customer's only one in the batch). The bounded
end-to-end run (processor and PostgreSQL CPU per event, concurrent batches) is
benchmarks/processor_throughput.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from processor_workload import batches
from pytest_benchmark.fixture import BenchmarkFixture

from clickstream.local_postgres import postgres_url
from processor.core import Processor, decode
from processor.migrations import migrate
from processor.postgres import PostgresSink, create_sink_pool

BATCH = 5_000
WORKLOADS = ("shoppers", "worst")


@pytest.mark.parametrize("workload", WORKLOADS)
def test_decode_and_enrich(benchmark: BenchmarkFixture, workload: str) -> None:
    batch = next(batches(workload, BATCH))
    decode(batch)  # warm the user-agent and URL caches, as a running worker has them
    result = benchmark(decode, batch)
    assert len(result.events) == BATCH


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_url() as url:
        yield url


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def sink(loop: asyncio.AbstractEventLoop, database_url: str) -> Iterator[PostgresSink]:
    loop.run_until_complete(migrate(database_url))
    pool = loop.run_until_complete(create_sink_pool(database_url))
    yield PostgresSink(pool)
    loop.run_until_complete(pool.close())


@pytest.mark.parametrize("workload", WORKLOADS)
def test_postgres_batch_write(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    sink: PostgresSink,
    workload: str,
) -> None:
    """One transaction of 5,000 new events: sessions, COPY, insert, every aggregate."""
    stream = batches(workload, BATCH)

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        batch = decode(next(stream))
        return (batch.events, batch.bad), {}

    def write(events: list, bad: list) -> None:
        loop.run_until_complete(sink.write(events, bad))

    benchmark.pedantic(write, setup=setup, rounds=8, warmup_rounds=1)


@pytest.mark.parametrize("workload", WORKLOADS)
def test_decode_enrich_and_write(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    sink: PostgresSink,
    workload: str,
) -> None:
    """The whole core for one batch of 50 gateway messages of 100 events."""
    processor = Processor(sink)
    stream = batches(workload, BATCH)

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        return (next(stream),), {}

    def process(batch: list) -> None:
        loop.run_until_complete(processor.process(batch))

    benchmark.pedantic(process, setup=setup, rounds=8, warmup_rounds=1)
