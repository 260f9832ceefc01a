"""The streaming-pull worker's tuning, with its defaults written once.

Apart from the worker so that the command line can show the defaults without importing the
worker's gRPC and Pub/Sub clients (which would slow every `clickstream` command).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# Seconds between two prunes of one process: a worker, or a function instance (processor.function).
PRUNE_EVERY = 3600.0


@dataclass(frozen=True)
class WorkerOptions:
    # 20,000 rather than 5,000 events per transaction: PostgreSQL's CPU per event ~18% lower
    # (per-statement costs, and rows that every batch updates, amortized over more events).
    max_batch_events: int = 20_000
    max_batch_wait: float = 0.05  # seconds to wait for more messages after the first
    concurrency: int = 3  # batches in the sinks at once (= pool connections)
    # Flow control: messages held but not yet acked. Under load the gateway packs ~25 events
    # per message, so this holds `concurrency` full batches plus the one being collected.
    max_messages: int = 5_000
    max_bytes: int = 200 * 1024 * 1024
    retention: timedelta | None = None  # prune events older than this, hourly
    prune_every: float = PRUNE_EVERY
    min_backoff: float = 0.5
    max_backoff: float = 10.0
    retry_for: float = 60.0  # then nack and let Pub/Sub redeliver
    # Leases are extended this far ahead at a time (the client renews them while it holds the
    # messages). It bounds how long a killed worker's messages stay leased: with the client's
    # default, a 60 s stream deadline, Google's emulator redelivered them only after 60 s.
    lease_extension: int = 10  # seconds (the client sends it as an integer)
    # Against an emulator, each streaming pull ends after this long and the client opens the
    # next (`processor.worker.StreamLifetime`): Google's emulator never notices that a stream's
    # client went away, and until the stream's deadline it keeps leasing messages into it.
    stream_lifetime: float = 30.0  # seconds
