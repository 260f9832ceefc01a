"""The synchronous client: `track` and the helpers enqueue; a background thread sends.

    with Client("WRITE_KEY", url="https://collect.example.com") as client:
        client.page_view("https://shop.example.com/", anonymous_id="a-123")

Batches go out when `batch_size` events are waiting or `flush_interval` seconds have passed.
Failed sends are retried with jittered exponential backoff that honours `Retry-After`, with
the same bytes and so the same `event_id`s. `close()` (also on `with` exit and at interpreter
exit) flushes what is buffered.
"""

from __future__ import annotations

import atexit
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence

import httpx

from clickstream_contract.event import Event
from clickstream_sdk.buffer import EventBuffer, Stats, encode_event
from clickstream_sdk.delivery import (
    DEFAULT_BACKOFF,
    MAX_BATCH_EVENTS,
    MAX_REQUEST_BYTES,
    Backoff,
    Reply,
    Settled,
    Sleep,
    auth_headers,
    delivery_plan,
)
from clickstream_sdk.tracking import Tracking

USER_AGENT = "clickstream-python/0.1"


def http_client(write_key: str, url: str, timeout: float) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        timeout=timeout,
        headers={**auth_headers(write_key), "User-Agent": USER_AGENT},
    )


def deliver(
    http: httpx.Client,
    events: Sequence[bytes],
    *,
    compress: bool,
    backoff: Backoff,
    rng: random.Random,
    settled: Settled,
    stats: Stats,
    abort: threading.Event,
) -> None:
    """Run the retry policy for one batch with blocking I/O; `abort` cuts sleeps short."""
    plan = delivery_plan(
        events, compress=compress, backoff=backoff, rng=rng, settled=settled, aborted=abort.is_set
    )
    answer: Reply | None = None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration:
            return
        if isinstance(step, Sleep):
            stats.retries += 1
            abort.wait(step.seconds)
            answer = None
            continue
        try:
            response = http.post(step.path, content=step.body, headers=step.headers)
        except httpx.TransportError as error:
            answer = f"{type(error).__name__}: {error}"
        else:
            answer = (response.status_code, response.headers, response.content)


class Client(Tracking):
    def __init__(
        self,
        write_key: str,
        *,
        url: str = "http://127.0.0.1:8080",
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_buffer: int = 10_000,
        timeout: float = 10.0,
        compress: bool = True,
        backoff: Backoff = DEFAULT_BACKOFF,
        close_timeout: float = 10.0,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_EVENTS}")
        super().__init__()
        self.stats = Stats()
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.compress = compress
        self.backoff = backoff
        self.close_timeout = close_timeout
        self._buffer = EventBuffer(max_buffer, self.stats)
        self._cond = threading.Condition()
        self._sending = 0
        self._flush_wanted = False
        self._closing = False
        self._abort = threading.Event()
        self._rng = random.Random()
        self._http = http_client(write_key, url, timeout)
        self._thread = threading.Thread(target=self._run, name="clickstream-sender", daemon=True)
        self._thread.start()
        self._atexit = _close_at_exit(weakref.ref(self))
        atexit.register(self._atexit)

    def enqueue(self, event: Event) -> uuid.UUID | None:
        data = encode_event(event)
        with self._cond:
            if self._closing:
                raise RuntimeError("clickstream client is closed")
            if not self._buffer.push(data):
                return None
            if len(self._buffer) >= self.batch_size:
                self._cond.notify_all()
        return event.event_id

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything buffered now; True once the gateway has answered for all of it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_wanted = True
            self._cond.notify_all()
            while len(self._buffer) or self._sending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        """Flush for up to `close_timeout` seconds, then stop the sender and release connections.

        Whatever could not be sent by then is counted in `stats.failed` and logged.
        """
        atexit.unregister(self._atexit)
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join(self.close_timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_batch(self) -> list[bytes] | None:
        """Wait for a full batch, a flush, `flush_interval` or close; None when finished."""
        with self._cond:
            self._sending = 0
            self._cond.notify_all()
            deadline = time.monotonic() + self.flush_interval
            while (
                len(self._buffer) < self.batch_size and not self._flush_wanted and not self._closing
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._abort.is_set() or (self._closing and not len(self._buffer)):
                self.stats.settled(self._buffer.take_all(), None, "client closed")
                return None
            batch = self._buffer.take(self.batch_size, MAX_REQUEST_BYTES)
            if not len(self._buffer):
                self._flush_wanted = False
            self._sending = len(batch)
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                deliver(
                    self._http,
                    batch,
                    compress=self.compress,
                    backoff=self.backoff,
                    rng=self._rng,
                    settled=self.stats.settled,
                    stats=self.stats,
                    abort=self._abort,
                )
        with self._cond:
            self._sending = 0
            self._cond.notify_all()


def _close_at_exit(ref: weakref.ref[Client]) -> Callable[[], None]:
    # A weak reference: registering the bound method would keep every client alive forever.
    def close() -> None:
        client = ref()
        if client is not None:
            client.close()

    return close
