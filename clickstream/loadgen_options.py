"""The load generator's options and their defaults, in a module of their own.

`clickstream loadgen --help` shows these defaults; keeping them away from the generator (httpx,
the SDK, the shoppers) keeps `clickstream --help` instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickstream_sdk.delivery import Backoff


def loadgen_backoff() -> Backoff:
    """Retries sooner and give up sooner than the SDK's default: a load run wants answers."""
    from clickstream_sdk.delivery import Backoff

    return Backoff(base=0.1, cap=10.0, max_retries=8)


# No slots: `clickstream loadgen --help` reads the defaults back from the class attributes.
@dataclass(frozen=True)
class Options:
    url: str
    write_key: str
    rate: float | None = None  # events per second; None: as fast as `concurrency` allows
    duration: float | None = None  # seconds
    count: int | None = None  # events
    batch_size: int = 1
    concurrency: int = 32
    ids_file: Path | None = None
    seed: int | None = None
    invalid_share: float = 0.0
    gzip: bool = False
    timeout: float = 10.0
    backoff: Backoff = field(default_factory=loadgen_backoff)

    def __post_init__(self) -> None:
        from clickstream_sdk.delivery import MAX_BATCH_EVENTS

        if not 1 <= self.batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"--batch-size must be between 1 and {MAX_BATCH_EVENTS}")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("--rate must be positive (omit it for no limit)")
