"""`clickstream loadgen`: simulated shoppers (clickstream.shoppers) sent to a gateway.

Open-loop pacing at `rate` events/s (requests are due on a fixed schedule whatever the answers
take; `concurrency` bounds the requests in flight), or as fast as `concurrency` allows when no
rate is given. Retries follow the SDK's policy (`clickstream_sdk.delivery`): 429/503 honour
`Retry-After`, the same bytes are resent, so a retry never double counts. The ids of accepted
events (minus those a 202 lists as rejected) go to `ids_file`, for `clickstream audit`.
The options and their defaults are in clickstream.loadgen_options.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

from clickstream.loadgen_options import Options
from clickstream.shoppers import Generated, Traffic
from clickstream_contract.answers import IngestResponse
from clickstream_sdk.delivery import (
    Reply,
    Sleep,
    auth_headers,
    delivery_plan,
)


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    sent: int = 0  # events handed to a request
    accepted: int = 0
    rejected: int = 0
    failed: int = 0  # events whose request failed for good (not counted as rejected)
    invalid_sent: int = 0  # events generated invalid on purpose (--invalid-share)
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, per attempt
    window_start: int = 0  # index into latencies where the current progress window starts
    aborted: str | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress_line(self) -> str:
        window = self.latencies[self.window_start :]
        self.window_start = len(self.latencies)
        return (
            f"{self.elapsed():7.1f}s  sent {self.sent:,}  accepted {self.accepted:,}  "
            f"rejected {self.rejected:,}  errors {self.failed:,}  "
            f"{self.sent / max(self.elapsed(), 1e-9):,.0f} ev/s  "
            f"p50 {ms(percentile(window, 50))}  p99 {ms(percentile(window, 99))}"
        )

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        return {
            "seconds": round(elapsed, 3),
            "requests": self.requests,
            "events_sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "invalid_sent": self.invalid_sent,
            "failed": self.failed,
            "retries": self.retries,
            "events_per_second": round(self.sent / max(elapsed, 1e-9), 1),
            "requests_per_second": round(self.requests / max(elapsed, 1e-9), 1),
            "latency_ms": {
                f"p{p}": round(percentile(self.latencies, p) * 1000, 3) for p in (50, 90, 99)
            },
            "statuses": dict(self.statuses),
            "errors": dict(self.errors.most_common(5)),
            "aborted": self.aborted,
        }


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class Run:
    """One load generation run: the schedule, the requests in flight and their tally."""

    def __init__(self, options: Options, ids_out: IO[str] | None) -> None:
        self.options = options
        self.ids_out = ids_out
        self.tally = Tally()
        self.rng = random.Random(options.seed)
        self.stop = asyncio.Event()

    def settled(self, batch: Sequence[Generated]) -> Any:
        # The retry policy reports on (possibly split) slices of the encoded events; map them
        # back to the generated items by identity, which holds while the request is alive.
        by_data = {id(item.data): item for item in batch}

        def settled(events: Sequence[bytes], accepted: IngestResponse | None, reason: str) -> None:
            items = [by_data[id(data)] for data in events]
            if accepted is None:
                self.tally.failed += len(items)
                self.tally.errors[reason[:120]] += 1
                if reason.startswith("HTTP 401"):
                    self.tally.aborted = "the gateway refused the write key (401)"
                    self.stop.set()
                return
            rejected = {r.index for r in accepted.rejected}
            self.tally.rejected += len(rejected)
            self.tally.accepted += len(items) - len(rejected)
            if self.ids_out is not None:
                self.ids_out.writelines(
                    f"{item.event_id}\n" for i, item in enumerate(items) if i not in rejected
                )

        return settled

    async def send(self, http: httpx.AsyncClient, batch: list[Generated]) -> None:
        tally = self.tally
        plan = delivery_plan(
            [item.data for item in batch],
            compress=self.options.gzip,
            backoff=self.options.backoff,
            rng=self.rng,
            settled=self.settled(batch),
            aborted=self.stop.is_set,
        )
        answer: Reply | None = None
        while True:
            try:
                step = plan.send(answer)
            except StopIteration:
                return
            if isinstance(step, Sleep):
                tally.retries += 1
                await asyncio.sleep(step.seconds)
                answer = None
                continue
            tally.requests += 1
            start = time.perf_counter()
            try:
                response = await http.post(step.path, content=step.body, headers=step.headers)
            except httpx.TransportError as error:
                answer = f"{type(error).__name__}: {error}"
                tally.statuses[type(error).__name__] += 1
            else:
                answer = (response.status_code, response.headers, response.content)
                tally.statuses[str(response.status_code)] += 1
            tally.latencies.append(time.perf_counter() - start)

    def batches(self, traffic: Traffic) -> Any:
        """The requests' payloads, until --count events or --duration seconds or a stop."""
        options, tally = self.options, self.tally
        while not self.stop.is_set():
            size = options.batch_size
            if options.count is not None:
                size = min(size, options.count - tally.sent)
                if size <= 0:
                    return
            if options.duration is not None and tally.elapsed() >= options.duration:
                return
            batch = [next(traffic) for _ in range(size)]
            tally.sent += size
            tally.invalid_sent += sum(not item.valid for item in batch)
            yield batch

    async def run(self) -> Tally:
        options = self.options
        traffic = Traffic(options.seed, invalid_share=options.invalid_share)
        # One single-connection client per slot: httpcore's shared pool scans every
        # connection for every queued request, which cost ~3 ms of CPU per request at 32.
        idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        in_flight: set[asyncio.Task[None]] = set()

        def release(http: httpx.AsyncClient, _: object) -> None:
            idle.put_nowait(http)

        async with contextlib.AsyncExitStack() as stack:
            for _ in range(options.concurrency):
                idle.put_nowait(
                    await stack.enter_async_context(
                        httpx.AsyncClient(
                            base_url=options.url,
                            timeout=options.timeout,
                            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                            headers=auth_headers(options.write_key),
                        )
                    )
                )
            start = time.monotonic()
            for n, batch in enumerate(self.batches(traffic)):
                if options.rate is not None:
                    due = start + n * options.batch_size / options.rate
                    if (wait := due - time.monotonic()) > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stop.wait(), wait)
                        if self.stop.is_set():
                            break
                http = await idle.get()
                task = asyncio.create_task(self.send(http, batch))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(functools.partial(release, http))
            await asyncio.gather(*in_flight)
        return self.tally


async def report_progress(tally: Tally, stream: IO[str], interval: float) -> None:
    live = stream.isatty()
    while True:
        await asyncio.sleep(interval)
        line = tally.progress_line()
        stream.write(f"\r\x1b[2K{line}" if live else f"{line}\n")
        stream.flush()


async def generate(
    options: Options, *, progress: IO[str] | None = sys.stderr, progress_interval: float = 1.0
) -> Tally:
    """Run the load generator; SIGINT/SIGTERM stop it gracefully (in-flight requests finish)."""
    with contextlib.ExitStack() as stack:
        ids_out = None
        if options.ids_file is not None:
            ids_out = stack.enter_context(options.ids_file.open("w", encoding="ascii"))
        run = Run(options, ids_out)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, run.stop.set)
                stack.callback(loop.remove_signal_handler, sig)
        out = progress
        reporter = None
        if out is not None:
            reporter = asyncio.create_task(report_progress(run.tally, out, progress_interval))
        try:
            return await run.run()
        finally:
            if reporter is not None and out is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                line = run.tally.progress_line()
                out.write(f"\r\x1b[2K{line}\n" if out.isatty() else f"{line}\n")
