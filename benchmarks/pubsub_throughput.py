"""Messages/s through the official batching publisher and `subscribe()`, per local endpoint.

Starts each endpoint in turn (the built-in emulator; Google's when installed), publishes a
fixed number of messages with `PublisherClient.publish` (default batch settings), then drains
them with `SubscriberClient.subscribe()`, acking each. Two shapes: small messages, and
gateway-sized ones (one message per ~1,000-event request).

    .venv/bin/python benchmarks/pubsub_throughput.py [--small 50000] [--large 500]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from google.cloud import pubsub_v1

from clickstream.emulators.google_pubsub import find_emulator
from clickstream.emulators.launch import start_pubsub_emulator, stop_process

SMALL_BYTES = 256
LARGE_BYTES = 256 * 1024  # ~1,000 events of ~250 bytes, as the gateway batches them


def measure(host: str, count: int, size: int) -> tuple[float, float]:
    """(published messages/s, received messages/s) for `count` messages of `size` bytes."""
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    project = f"bench-{uuid.uuid4().hex[:8]}"
    topic = publisher.topic_path(project, "events")
    subscription = subscriber.subscription_path(project, "events-processor")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    payload = os.urandom(size)

    started = time.perf_counter()
    futures = [publisher.publish(topic, payload) for _ in range(count)]
    for future in futures:
        future.result()
    publish_rate = count / (time.perf_counter() - started)
    publisher.stop()

    received = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_message(message: pubsub_v1.subscriber.message.Message) -> None:
        nonlocal received
        message.ack()
        with lock:
            received += 1
            if received >= count:
                done.set()

    started = time.perf_counter()
    future = subscriber.subscribe(subscription, on_message)
    finished = done.wait(timeout=60)
    receive_rate = received / (time.perf_counter() - started)
    future.cancel()
    future.result()
    subscriber.close()
    if not finished:
        print(f"  {host}: subscribe() stalled after {received} of {count} messages", flush=True)
        return publish_rate, float("nan")
    return publish_rate, receive_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=50_000, help="count of 256 B messages")
    parser.add_argument("--large", type=int, default=500, help="count of 256 KiB messages")
    args = parser.parse_args()
    endpoints = ["builtin"] + (["google"] if find_emulator() else [])
    shapes = [(args.small, SMALL_BYTES), (args.large, LARGE_BYTES)]
    rows: list[tuple[str, int, int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="pubsub-bench-") as tmp:
        for impl in endpoints:
            proc, host = start_pubsub_emulator(impl, Path(tmp) / f"{impl}.log")
            try:
                for count, size in shapes:
                    publish_rate, receive_rate = measure(host, count, size)
                    rows.append((impl, count, size, publish_rate, receive_rate))
            finally:
                stop_process(proc)
    print(
        f"{'endpoint':<9} {'messages':>9} {'size':>9} {'publish msg/s':>14} "
        f"{'subscribe msg/s':>16} {'subscribe MB/s':>15}"
    )
    for impl, count, size, publish_rate, receive_rate in rows:
        print(
            f"{impl:<9} {count:>9} {size:>9} {publish_rate:>14,.0f} "
            f"{receive_rate:>16,.0f} {receive_rate * size / 1e6:>15,.1f}"
        )
    if "google" not in endpoints:
        print("(Google's Pub/Sub emulator is not installed: built-in only)")


if __name__ == "__main__":
    main()
