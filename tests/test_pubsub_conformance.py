"""One Pub/Sub conformance suite, run through the official client against every local endpoint.

The built-in emulator always; Google's emulator when it is installed. Whatever Google's
emulator does, the built-in one must do too.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions
from google.protobuf.duration_pb2 import Duration
from google.pubsub_v1 import (
    DeadLetterPolicy,
    PubsubMessage,
    PushConfig,
    ReceivedMessage,
    RetryPolicy,
)
from google.pubsub_v1 import PublisherClient as GapicPublisher

from clickstream.emulators.google_pubsub import find_emulator

WAIT = 30.0  # generous upper bound for anything the suite waits for; normally < 1 s


def endpoint_params() -> list[object]:
    google = pytest.mark.skipif(
        find_emulator() is None, reason="Google's Pub/Sub emulator is not installed"
    )
    return ["builtin", pytest.param("google", marks=google)]


@dataclass
class PubSub:
    publisher: pubsub_v1.PublisherClient
    subscriber: pubsub_v1.SubscriberClient
    project: str
    unique_name: Callable[[str], str]

    def topic(self, **fields: object) -> str:
        name = self.publisher.topic_path(self.project, self.unique_name("topic"))
        self.publisher.create_topic(request={"name": name, **fields})
        return name

    def subscription(self, topic: str, **fields: object) -> str:
        name = self.subscriber.subscription_path(self.project, self.unique_name("sub"))
        self.subscriber.create_subscription(request={"name": name, "topic": topic, **fields})
        return name

    def pull(self, subscription: str, count: int, timeout: float = WAIT) -> list[ReceivedMessage]:
        """Pull until `count` messages arrived (or the timeout passed)."""
        received: list[ReceivedMessage] = []
        give_up = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < give_up:
            response = self.subscriber.pull(
                subscription=subscription, max_messages=count - len(received), timeout=5
            )
            received.extend(response.received_messages)
        return received

    def pull_now(self, subscription: str) -> list[ReceivedMessage]:
        """What is deliverable right now, without waiting for more."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The return_immediately flag", DeprecationWarning)
            response = self.subscriber.pull(
                subscription=subscription, max_messages=10, return_immediately=True, timeout=5
            )
        return list(response.received_messages)


@pytest.fixture(params=endpoint_params())
def endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pubsub(
    endpoint: str,
    pubsub_emulator: Callable[[str], str],
    pubsub_project: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PubSub]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator(endpoint))
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        yield PubSub(publisher, subscriber, pubsub_project, unique_name)
    finally:
        subscriber.close()
        publisher.stop()


def collect(
    pubsub: PubSub,
    subscription: str,
    on_message: Callable[[Message], None],
    until: Callable[[], bool],
) -> None:
    """Run `subscribe()` with `on_message` until `until()` holds; then stop the subscriber."""
    future = pubsub.subscriber.subscribe(subscription, on_message)
    try:
        give_up = time.monotonic() + WAIT
        while not until() and time.monotonic() < give_up and not future.done():
            time.sleep(0.02)
    finally:
        future.cancel()
        future.result(timeout=WAIT)  # waits for the subscriber's shutdown


def test_create_get_and_duplicate_create(pubsub: PubSub) -> None:
    topic = pubsub.topic()
    assert pubsub.publisher.get_topic(topic=topic).name == topic
    with pytest.raises(exceptions.AlreadyExists):
        pubsub.publisher.create_topic(name=topic)

    dead_letters = pubsub.topic()
    subscription = pubsub.subscription(
        topic,
        ack_deadline_seconds=30,
        dead_letter_policy=DeadLetterPolicy(
            dead_letter_topic=dead_letters, max_delivery_attempts=7
        ),
    )
    got = pubsub.subscriber.get_subscription(subscription=subscription)
    assert (got.topic, got.ack_deadline_seconds) == (topic, 30)
    assert got.dead_letter_policy.dead_letter_topic == dead_letters
    assert got.dead_letter_policy.max_delivery_attempts == 7
    with pytest.raises(exceptions.AlreadyExists):
        pubsub.subscriber.create_subscription(name=subscription, topic=topic)

    pubsub.subscriber.delete_subscription(subscription=subscription)
    with pytest.raises(exceptions.NotFound):
        pubsub.subscriber.get_subscription(subscription=subscription)
    pubsub.publisher.delete_topic(topic=topic)
    with pytest.raises(exceptions.NotFound):
        pubsub.publisher.get_topic(topic=topic)


def test_unknown_topic_and_subscription(pubsub: PubSub) -> None:
    missing_topic = pubsub.publisher.topic_path(pubsub.project, "never-created")
    missing_sub = pubsub.subscriber.subscription_path(pubsub.project, "never-created")
    with pytest.raises(exceptions.NotFound):
        pubsub.publisher.publish(missing_topic, b"x").result(timeout=WAIT)
    with pytest.raises(exceptions.NotFound):
        pubsub.publisher.get_topic(topic=missing_topic)
    with pytest.raises(exceptions.NotFound):
        pubsub.subscriber.create_subscription(name=missing_sub, topic=missing_topic)
    with pytest.raises(exceptions.NotFound):
        pubsub.subscriber.get_subscription(subscription=missing_sub)
    with pytest.raises(exceptions.NotFound):
        pubsub.subscriber.pull(subscription=missing_sub, max_messages=1, timeout=5)
    with pytest.raises(exceptions.NotFound):
        pubsub.subscriber.delete_subscription(subscription=missing_sub)
    future = pubsub.subscriber.subscribe(missing_sub, lambda message: message.ack())
    with pytest.raises(exceptions.NotFound):
        future.result(timeout=WAIT)


def test_bad_input_gets_invalid_argument(pubsub: PubSub) -> None:
    for malformed in ("topics/no-project", f"projects/{pubsub.project}/topics/1starts-with-digit"):
        with pytest.raises(exceptions.InvalidArgument):
            pubsub.publisher.create_topic(name=malformed)
    with pytest.raises(exceptions.InvalidArgument):
        pubsub.subscriber.create_subscription(
            name=f"projects/{pubsub.project}/subscriptions/a", topic=pubsub.topic()
        )
    topic = pubsub.topic()
    # The raw Publish RPC: the batching publisher would refuse these before sending.
    with pytest.raises(exceptions.InvalidArgument):
        GapicPublisher.publish(pubsub.publisher, topic=topic, messages=[PubsubMessage()])
    # An attribute alone is a valid message.
    accepted = GapicPublisher.publish(
        pubsub.publisher, topic=topic, messages=[PubsubMessage(attributes={"k": "v"})]
    )
    assert len(accepted.message_ids) == 1


def test_oversized_publish_request_gets_invalid_argument(pubsub: PubSub, endpoint: str) -> None:
    if endpoint == "google":
        pytest.skip("Google's emulator accepts > 10 MB requests; the real service does not")
    oversized = PubsubMessage(data=b"x" * (10 * 1024 * 1024 + 1))
    with pytest.raises(exceptions.InvalidArgument, match="10485760"):
        GapicPublisher.publish(pubsub.publisher, topic=pubsub.topic(), messages=[oversized])


def test_batched_publish_of_10k_messages_is_received_exactly(pubsub: PubSub) -> None:
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic)
    publisher = pubsub_v1.PublisherClient(BatchSettings(max_messages=500, max_latency=0.01))
    sent = [f"message-{i}".encode() for i in range(10_000)]
    futures = [publisher.publish(topic, data, index=str(i)) for i, data in enumerate(sent)]
    message_ids = [future.result(timeout=WAIT) for future in futures]
    publisher.stop()
    assert len(set(message_ids)) == len(sent)

    received: Counter[bytes] = Counter()
    lock = threading.Lock()

    def on_message(message: Message) -> None:
        assert message.attributes["index"] == message.data.decode().removeprefix("message-")
        with lock:
            received[message.data] += 1
        message.ack()

    collect(pubsub, subscription, on_message, until=lambda: len(received) >= len(sent))
    assert set(received) == set(sent)
    assert max(received.values()) == 1


def test_nack_redelivers_and_ack_stops_delivery(pubsub: PubSub) -> None:
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic)
    pubsub.publisher.publish(topic, b"once more").result(timeout=WAIT)
    deliveries: list[bytes] = []

    def on_message(message: Message) -> None:
        deliveries.append(message.data)
        if len(deliveries) == 1:
            message.nack()
        else:
            message.ack()

    collect(pubsub, subscription, on_message, until=lambda: len(deliveries) >= 2)
    assert deliveries == [b"once more", b"once more"]
    assert pubsub.pull_now(subscription) == []  # acked: nothing left to deliver


def test_expired_ack_deadline_redelivers(pubsub: PubSub) -> None:
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic, ack_deadline_seconds=10)
    pubsub.publisher.publish(topic, b"slow consumer").result(timeout=WAIT)
    [first] = pubsub.pull(subscription, 1)
    # Shorten the lease instead of waiting the 10 s minimum subscription deadline.
    pubsub.subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[first.ack_id], ack_deadline_seconds=1
    )
    started = time.monotonic()
    [second] = pubsub.pull(subscription, 1)
    assert time.monotonic() - started >= 0.5  # not before the shortened deadline
    assert second.message.message_id == first.message.message_id
    assert second.message.data == b"slow consumer"
    pubsub.subscriber.acknowledge(subscription=subscription, ack_ids=[second.ack_id])


def test_dead_letter_after_max_delivery_attempts(pubsub: PubSub) -> None:
    topic = pubsub.topic()
    dead_letter_topic = pubsub.topic()
    dead_letters = pubsub.subscription(dead_letter_topic)
    subscription = pubsub.subscription(
        topic,
        dead_letter_policy=DeadLetterPolicy(
            dead_letter_topic=dead_letter_topic, max_delivery_attempts=5
        ),
    )
    pubsub.publisher.publish(topic, b"poison", reason="test").result(timeout=WAIT)
    attempts = []
    for _ in range(5):
        [received] = pubsub.pull(subscription, 1)
        attempts.append(received.delivery_attempt)
        pubsub.subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0
        )
    assert attempts == [1, 2, 3, 4, 5]
    # Used up: the next pull finds nothing (Google's emulator dead-letters during that pull).
    assert pubsub.pull_now(subscription) == []
    [dead] = pubsub.pull(dead_letters, 1)
    assert dead.message.data == b"poison"
    assert dead.message.attributes["reason"] == "test"
    source = pubsub.subscriber.parse_subscription_path(subscription)
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert (
        dead.message.attributes["CloudPubSubDeadLetterSourceSubscription"]
        == (source["subscription"])
    )
    assert dead.message.attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] == (
        pubsub.project
    )
    pubsub.subscriber.acknowledge(subscription=dead_letters, ack_ids=[dead.ack_id])


def test_ordering_keys_deliver_in_order_per_key(pubsub: PubSub) -> None:
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic, enable_message_ordering=True)
    publisher = pubsub_v1.PublisherClient(
        publisher_options=PublisherOptions(enable_message_ordering=True)
    )
    keys = ("cart-1", "cart-2", "cart-3")
    futures = [
        publisher.publish(topic, f"{key}:{i}".encode(), ordering_key=key)
        for i in range(200)
        for key in keys
    ]
    for future in futures:
        future.result(timeout=WAIT)
    publisher.stop()

    seen: dict[str, list[int]] = {key: [] for key in keys}
    lock = threading.Lock()

    def on_message(message: Message) -> None:
        key, index = message.data.decode().split(":")
        assert message.ordering_key == key
        with lock:
            seen[key].append(int(index))
        message.ack()

    collect(pubsub, subscription, on_message, until=lambda: sum(map(len, seen.values())) >= 600)
    for key in keys:
        assert seen[key] == list(range(200)), key


# Push subscriptions: the emulator POSTs to an HTTP endpoint of ours.


@dataclass
class Push:
    at: float
    path: str
    body: dict[str, object]


@dataclass
class PushEndpoint:
    """A loopback HTTP server recording every push; `answer(n)` is (status, seconds to wait
    before answering) for the n-th push (from 1)."""

    answer: Callable[[int], tuple[int, float]] = lambda n: (204, 0.0)
    pushes: list[Push] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> ThreadingHTTPServer:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.pushes.append(Push(time.monotonic(), self.path, body))
                    status, wait = endpoint.answer(len(endpoint.pushes))
                time.sleep(wait)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Push]:
        give_up = time.monotonic() + timeout
        while len(self.pushes) < count and time.monotonic() < give_up:
            time.sleep(0.02)
        return list(self.pushes)


@pytest.fixture
def push_endpoint() -> Iterator[tuple[PushEndpoint, str]]:
    endpoint = PushEndpoint()
    server = endpoint.serve()
    try:
        yield endpoint, f"http://127.0.0.1:{server.server_port}/push/here"
    finally:
        server.shutdown()
        server.server_close()


def backoff(low: float, high: float) -> RetryPolicy:
    return RetryPolicy(
        minimum_backoff=Duration(seconds=low), maximum_backoff=Duration(seconds=high)
    )


def test_push_posts_the_wrapped_message_and_a_2xx_acks_it(
    pubsub: PubSub, push_endpoint: tuple[PushEndpoint, str]
) -> None:
    endpoint, url = push_endpoint
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic, push_config=PushConfig(push_endpoint=url))
    message_id = pubsub.publisher.publish(topic, b"\x00binary\xff", kind="a").result(timeout=WAIT)
    [push] = endpoint.wait_for(1)
    assert push.path == "/push/here"
    assert push.body["subscription"] == subscription
    message = push.body["message"]
    assert isinstance(message, dict)
    assert base64.b64decode(message["data"]) == b"\x00binary\xff"
    assert message["attributes"] == {"kind": "a"}
    assert message["messageId"] == message["message_id"] == message_id
    assert datetime.fromisoformat(message["publishTime"]).tzinfo is not None
    # Acked by the 204: back to pull, nothing is left to deliver.
    pubsub.subscriber.modify_push_config(subscription=subscription, push_config=PushConfig())
    assert pubsub.pull_now(subscription) == []
    assert len(endpoint.pushes) == 1


def test_failed_pushes_are_retried_with_backoff_then_dead_lettered(
    pubsub: PubSub, push_endpoint: tuple[PushEndpoint, str]
) -> None:
    endpoint, url = push_endpoint
    endpoint.answer = lambda n: (500, 0.0)
    topic = pubsub.topic()
    dead_letter_topic = pubsub.topic()
    dead_letters = pubsub.subscription(dead_letter_topic)
    subscription = pubsub.subscription(
        topic,
        push_config=PushConfig(push_endpoint=url),
        retry_policy=backoff(1, 2),
        dead_letter_policy=DeadLetterPolicy(
            dead_letter_topic=dead_letter_topic, max_delivery_attempts=5
        ),
    )
    pubsub.publisher.publish(topic, b"refused").result(timeout=WAIT)
    [dead] = pubsub.pull(dead_letters, 1)
    assert dead.message.data == b"refused"
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    pushes = endpoint.pushes
    assert len(pushes) == 5
    # Not before the minimum backoff (1 s), whatever the emulator's schedule above it.
    assert min(b.at - a.at for a, b in itertools.pairwise(pushes)) >= 0.9
    assert pubsub.subscriber.get_subscription(subscription=subscription).push_config.push_endpoint


def test_a_push_unanswered_within_the_ack_deadline_is_redelivered(
    pubsub: PubSub, push_endpoint: tuple[PushEndpoint, str]
) -> None:
    endpoint, url = push_endpoint
    endpoint.answer = lambda n: (200, 12.0) if n == 1 else (200, 0.0)  # the first one hangs
    topic = pubsub.topic()
    pubsub.subscription(topic, ack_deadline_seconds=10, push_config=PushConfig(push_endpoint=url))
    pubsub.publisher.publish(topic, b"slow endpoint").result(timeout=WAIT)
    first, second = endpoint.wait_for(2)
    assert second.at - first.at >= 9.5  # the push timed out with the ack deadline, not before
    assert second.body["message"] == first.body["message"]
