"""`clickstream processor`: the streaming-pull shell around `processor.core`.

Pub/Sub's streaming pull delivers messages to a callback in the client's threads; they are
handed to the event loop, where the batcher collects them for a few milliseconds (or up to a
number of events) and writes each batch in one sink transaction, then acks all of its messages.
On a transient failure it retries the batch with backoff, and nacks it after a while. Flow
control bounds how many messages are held. Several batches may be in the sinks at once, one per pool
connection, so decoding overlaps the database's work.

Once started, the garbage collector is tuned (`clickstream_contract.gc_tuning`): a batch
allocates a few objects per event, and the default thresholds ran a collection every 700 of them.

SIGTERM/SIGINT: stop pulling, nack what has not started, let the batches in the sinks finish
(they ack or nack), then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import grpc
from google.cloud.pubsub_v1 import SubscriberClient
from google.cloud.pubsub_v1.subscriber.message import Message as PubsubMessage
from google.cloud.pubsub_v1.types import FlowControl
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from clickstream_contract.config import PUBSUB_CHANNEL_OPTIONS, Settings, describe_database
from clickstream_contract.gc_tuning import tune_after_startup
from processor import db
from processor.core import Message, Processor
from processor.options import WorkerOptions
from processor.postgres import start_sink
from processor.sinks import other_sinks

log = logging.getLogger(__name__)


class StreamLifetime(grpc.StreamStreamClientInterceptor):
    """Gives every streaming pull a deadline of `seconds`; the client library opens the next
    stream when one reaches it (DEADLINE_EXCEEDED is a recoverable stream error for it).

    For emulators. Google's (0.8.20) never learns that a streaming pull's client has gone,
    killed or stopped (closing the stream throws NoSuchMethodError inside its gRPC server), and
    goes on leasing that subscription's messages into the dead stream, about one batch in two
    beside a live one: each comes back a lease (10 s) later, and may go to the dead stream again.
    It ends the stream at its deadline (by default 30 minutes), so this bounds the harm.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        if client_call_details.method.endswith("/StreamingPull"):
            timeout = client_call_details.timeout
            if timeout is None or timeout > self.seconds:
                client_call_details = client_call_details._replace(timeout=self.seconds)
        return continuation(client_call_details, request_iterator)


def subscriber_client(settings: Settings, stream_lifetime: float) -> SubscriberClient:
    """The client for Pub/Sub, or for the emulator with streams that last `stream_lifetime`."""
    if settings.pubsub_emulator_host is None:
        return SubscriberClient()
    channel = grpc.intercept_channel(
        grpc.insecure_channel(settings.pubsub_emulator_host, options=PUBSUB_CHANNEL_OPTIONS),
        StreamLifetime(stream_lifetime),
    )
    return SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def to_message(message: PubsubMessage) -> Message:
    return Message(
        message_id=message.message_id,
        data=message.data,
        attributes=message.attributes,
        publish_time=message.publish_time,
    )


def event_count(message: PubsubMessage) -> int:
    try:
        return max(1, int(message.attributes.get("event_count", "1")))
    except ValueError:
        return 1


class Worker:
    def __init__(self, processor: Processor, options: WorkerOptions) -> None:
        self.processor = processor
        self.options = options
        self.queue: asyncio.Queue[PubsubMessage] = asyncio.Queue()
        self.slots = asyncio.Semaphore(options.concurrency)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.processed_messages = 0

    def callback(self, loop: asyncio.AbstractEventLoop) -> Any:
        """The Pub/Sub callback (runs in the client's threads)."""

        def receive(message: PubsubMessage) -> None:
            if self.stopping:
                message.nack()
                return
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, message)
            except RuntimeError:  # the loop is closed: we are gone
                message.nack()

        return receive

    async def run(self, stop: asyncio.Event) -> None:
        """Batch and process until `stop` is set, then drain."""
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.create_task(self.queue.get())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                batch = await self._collect(getter.result())
                await self.slots.acquire()
                task = asyncio.create_task(self._handle(batch))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
        finally:
            stopper.cancel()
            self.stopping = True
            await self.drain()

    async def _collect(self, first: PubsubMessage) -> list[PubsubMessage]:
        batch, events = [first], event_count(first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.max_batch_wait
        while events < self.options.max_batch_events:
            if self.queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    message = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                message = self.queue.get_nowait()
            batch.append(message)
            events += event_count(message)
        return batch

    async def _handle(self, batch: list[PubsubMessage]) -> None:
        """Process, then ack; on failure retry with backoff while holding the messages (the
        client keeps extending their leases), and nack only after `retry_for` or on shutdown:
        nacking at once would burn the dead-letter policy's attempts during a short outage."""
        loop = asyncio.get_running_loop()
        messages = [to_message(message) for message in batch]
        give_up_at = loop.time() + self.options.retry_for
        delay = self.options.min_backoff
        try:
            while True:
                try:
                    await self.processor.process(messages)
                except Exception as exc:
                    if self.stopping or loop.time() + delay > give_up_at:
                        log.exception("batch of %d messages failed; nacking", len(batch))
                        for message in batch:
                            message.nack()
                        return
                    log.warning("batch failed (%r); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.options.max_backoff)
                else:
                    for message in batch:
                        message.ack()
                    self.processed_messages += len(batch)
                    return
        finally:
            self.slots.release()

    async def drain(self) -> None:
        """Nack what never reached a batch; let batches in the sinks finish."""
        while not self.queue.empty():
            self.queue.get_nowait().nack()
        if self.in_flight:
            await asyncio.wait(set(self.in_flight))


async def serve(settings: Settings, options: WorkerOptions, stop: asyncio.Event) -> None:
    """Run the worker on the events and bad-events subscriptions until `stop` is set."""
    sink = await start_sink(settings.database_url, max_size=options.concurrency)
    pool = sink.pool
    others = await other_sinks(settings)
    worker = Worker(Processor(sink, others), options)
    subscriber = subscriber_client(settings, options.stream_lifetime)
    flow = FlowControl(
        max_messages=options.max_messages,
        max_bytes=options.max_bytes,
        max_duration_per_lease_extension=options.lease_extension,
    )
    callback = worker.callback(asyncio.get_running_loop())
    futures = [
        subscriber.subscribe(settings.subscription_path(name), callback, flow_control=flow)
        for name in (settings.events_subscription, settings.bad_events_subscription)
    ]
    pruner = (
        asyncio.create_task(db.prune_periodically(pool, options.retention, options.prune_every))
        if options.retention
        else None
    )
    log.info(
        "processing %s and %s (PostgreSQL %s)",
        settings.events_subscription,
        settings.bad_events_subscription,
        describe_database(settings.database_url or ""),
    )
    tune_after_startup()
    try:
        await worker.run(stop)
    finally:
        worker.stopping = True
        for future in futures:
            future.cancel()  # stops the stream; the client nacks messages it still holds
        await asyncio.to_thread(_wait_closed, futures)
        await worker.drain()  # messages that slipped into the queue while the stream closed
        if pruner is not None:
            pruner.cancel()
        for other in others:
            close = getattr(other, "close", None)
            if close is not None:
                await close()
        subscriber.close()
        await pool.close()
        log.info("stopped after %d messages", worker.processed_messages)


def _wait_closed(futures: list[Any]) -> None:
    for future in futures:
        with contextlib.suppress(Exception):
            future.result(timeout=30)


def main(settings: Settings, options: WorkerOptions) -> int:
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, options, stop)

    asyncio.run(run())
    return 0
