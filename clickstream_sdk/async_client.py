"""The asyncio client: helpers enqueue without awaiting; a background task sends.

    async with AsyncClient("WRITE_KEY", url="https://collect.example.com") as client:
        client.page_view("https://shop.example.com/", anonymous_id="a-123")
        await client.flush()

Same batching, retry and buffer policy as `Client`. Close it with `await client.aclose()` or
`async with`; if a program exits without doing so, an exit hook sends what is still buffered
with blocking I/O, so events are not lost at shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import random
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence

import httpx

from clickstream_contract.event import Event
from clickstream_sdk.buffer import EventBuffer, Stats, encode_event
from clickstream_sdk.client import USER_AGENT, deliver, http_client
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


async def deliver_async(
    http: httpx.AsyncClient,
    events: Sequence[bytes],
    *,
    compress: bool,
    backoff: Backoff,
    rng: random.Random,
    settled: Settled,
    stats: Stats,
) -> None:
    """Run the retry policy for one batch with asyncio I/O (see `client.deliver`)."""
    plan = delivery_plan(events, compress=compress, backoff=backoff, rng=rng, settled=settled)
    answer: Reply | None = None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration:
            return
        if isinstance(step, Sleep):
            stats.retries += 1
            await asyncio.sleep(step.seconds)
            answer = None
            continue
        try:
            response = await http.post(step.path, content=step.body, headers=step.headers)
        except httpx.TransportError as error:
            answer = f"{type(error).__name__}: {error}"
        else:
            answer = (response.status_code, response.headers, response.content)


class AsyncClient(Tracking):
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
        self._write_key, self._url, self._timeout = write_key, url, timeout
        self._buffer = EventBuffer(max_buffer, self.stats)
        self._wake = asyncio.Event()  # a full batch, a flush or close is waiting
        self._drained = asyncio.Event()  # nothing buffered and nothing in flight
        self._drained.set()
        self._sending: Sequence[bytes] = ()
        self._flush_wanted = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._rng = random.Random()
        self._atexit = _send_rest_at_exit(weakref.ref(self))
        atexit.register(self._atexit)

    def enqueue(self, event: Event) -> uuid.UUID | None:
        """Buffer an event; starts the sender task when called inside a running event loop."""
        if self._closing:
            raise RuntimeError("clickstream client is closed")
        if not self._buffer.push(encode_event(event)):
            return None
        self._drained.clear()
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        # Without a running loop yet, events wait for `flush`/`async with`, or the exit hook.
        with contextlib.suppress(RuntimeError):
            self._start()
        return event.event_id

    async def flush(self) -> None:
        """Send everything buffered now; returns once the gateway has answered for all of it.

        Bound the wait with `asyncio.timeout(...)` around the call if needed.
        """
        self._start()
        self._flush_wanted = True
        self._wake.set()
        await self._drained.wait()

    async def aclose(self) -> None:
        """Flush for up to `close_timeout` seconds, then stop; unsent events count as failed."""
        if self._closing:
            return
        atexit.unregister(self._atexit)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.close_timeout):
                await self.flush()
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        unsent = [*self._sending, *self._buffer.take_all()]
        self.stats.settled(unsent, None, "client closed before the gateway answered")
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _start(self) -> None:
        """Create the sender task on the running loop (RuntimeError when none is running)."""
        asyncio.get_running_loop()
        if self._task is None:
            self._http = httpx.AsyncClient(
                base_url=self._url,
                timeout=self._timeout,
                headers={**auth_headers(self._write_key), "User-Agent": USER_AGENT},
            )
            self._task = asyncio.create_task(self._run(), name="clickstream-sender")

    async def _next_batch(self) -> list[bytes]:
        """Wait for a full batch, a flush or `flush_interval`, then take a batch."""
        if len(self._buffer) < self.batch_size and not self._flush_wanted:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()
        batch = self._buffer.take(self.batch_size, MAX_REQUEST_BYTES)
        if not len(self._buffer):
            self._flush_wanted = False
        return batch

    async def _run(self) -> None:
        assert self._http is not None
        while True:
            self._sending = await self._next_batch()
            if self._sending:
                await deliver_async(
                    self._http,
                    self._sending,
                    compress=self.compress,
                    backoff=self.backoff,
                    rng=self._rng,
                    settled=self.stats.settled,
                    stats=self.stats,
                )
            self._sending = ()
            if not len(self._buffer):
                self._drained.set()

    def _send_rest(self) -> None:
        """At interpreter exit, without an event loop: send what is left with blocking I/O."""
        rest = self._buffer.take_all()
        if not rest:
            return
        with http_client(self._write_key, self._url, self._timeout) as http:
            for start in range(0, len(rest), self.batch_size):
                deliver(
                    http,
                    rest[start : start + self.batch_size],
                    compress=self.compress,
                    backoff=self.backoff,
                    rng=self._rng,
                    settled=self.stats.settled,
                    stats=self.stats,
                    abort=threading.Event(),
                )


def _send_rest_at_exit(ref: weakref.ref[AsyncClient]) -> Callable[[], None]:
    def send_rest() -> None:
        client = ref()
        if client is not None:
            client._send_rest()

    return send_rest
