"""Prometheus metrics of the gateway.

Each Granian worker is its own process, so `clickstream gateway` points
`PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start; every worker writes
its samples there and `/metrics` (served by any worker) adds them up. Without that variable
(tests, embedding) the metrics live in the process's default registry.
"""

from __future__ import annotations

import os
from functools import cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from clickstream.envelope import Kind

REQUESTS = Counter(
    "gateway_requests",
    "HTTP requests to the ingest routes by route and status",
    ["route", "status"],
)
EVENTS = Counter("gateway_events", "Events by outcome (accepted or rejected)", ["outcome"])
UNEXPECTED_ERRORS = Counter(
    "gateway_unexpected_errors", "Requests that raised an unexpected exception (a bug)"
)
BATCH_EVENTS = Histogram(
    "gateway_publish_batch_events",
    "Events per published Pub/Sub message",
    ["kind"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
BATCH_BYTES = Histogram(
    "gateway_publish_batch_bytes",
    "Bytes per published Pub/Sub message",
    ["kind"],
    buckets=(1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2e6, 4e6),
)
PUBLISH_SECONDS = Histogram(
    "gateway_publish_seconds",
    "Time to publish one message, retries included",
    ["kind", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_BYTES = Gauge(
    "gateway_publish_queue_bytes",
    "Bytes accepted and waiting to be published",
    multiprocess_mode="livesum",
)


@cache
def requests(route: str, status: int) -> Counter:
    """The counter child for (route, status), looked up once: `labels()` costs on a hot path."""
    return REQUESTS.labels(route, str(status))


ACCEPTED = EVENTS.labels("accepted")
REJECTED = EVENTS.labels("rejected")


def observe_publish(kind: Kind, events: int, size: int, seconds: float, ok: bool) -> None:
    if ok:
        BATCH_EVENTS.labels(kind).observe(events)
        BATCH_BYTES.labels(kind).observe(size)
    PUBLISH_SECONDS.labels(kind, "ok" if ok else "failed").observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics text (summed over workers in multiprocess mode) and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
