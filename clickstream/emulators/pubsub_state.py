"""State of the built-in Pub/Sub emulator: topics, subscriptions, leases, delivery.

Everything runs on one asyncio loop, so no locks. Each published message is serialized once;
every delivery reuses those bytes (see `pubsub_wire`), so fan-out and redelivery copy nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.pubsub_v1.types import PubsubMessage

# Protobuf classes are built at run time, so to the type checker every message is `Proto`.
Proto = Any
PUBSUB_MESSAGE: Any = PubsubMessage.pb()

MAX_REQUEST_BYTES = 10 * 1024 * 1024
DEFAULT_ACK_DEADLINE = 10
MIN_ACK_DEADLINE, MAX_ACK_DEADLINE = 10, 600
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100
# Responses stay under gRPC's default 4 MB receive limit, which clients talking to an emulator
# may keep (a larger response kills the stream); a single bigger message still goes alone.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024
MAX_RESPONSE_MESSAGES = 1000
DELETED_TOPIC = "_deleted-topic_"
# A retry policy whose bounds are left unset gets the real service's defaults.
DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF = 10.0, 600.0
MAX_BACKOFF_LIMIT = 600.0
UPDATABLE_FIELDS = {"push_config", "retry_policy"}

RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
PROJECT_ID = re.compile(r"[^/]+")


class RpcError(Exception):
    """A gRPC status the servicer returns to the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_name(name: str, collection: str) -> str:
    """Validate `projects/P/<collection>/ID` like the real service; return the project."""
    parts = name.split("/")
    if (
        len(parts) != 4
        or parts[0] != "projects"
        or parts[2] != collection
        or not PROJECT_ID.fullmatch(parts[1])
        or not RESOURCE_ID.fullmatch(parts[3])
        or parts[3].startswith("goog")
    ):
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Invalid [{collection}] name: (name={name})"
        )
    return parts[1]


def parse_project(name: str) -> str:
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "projects" or not PROJECT_ID.fullmatch(parts[1]):
        raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid [projects] name: (name={name})")
    return parts[1]


def not_found(kind: str, name: str) -> RpcError:
    return RpcError(grpc.StatusCode.NOT_FOUND, f"{kind} not found (resource={name}).")


class Entry:
    """One message in one subscription: its bytes, delivery count and current lease."""

    __slots__ = ("ack_id", "attempts", "deadline", "key", "lease", "seq", "serialized")

    def __init__(self, serialized: bytes, key: str, seq: int) -> None:
        self.serialized = serialized
        self.key = key
        self.seq = seq
        self.attempts = 0
        self.ack_id = ""
        self.deadline = 0.0
        self.lease: Lease | None = None


@dataclass(eq=False)
class Lease:
    """A consumer (a StreamingPull stream, or one Pull call) holding messages under lease."""

    ack_deadline: float
    max_messages: int = 0  # 0: no limit
    max_bytes: int = 0
    outstanding_messages: int = 0
    outstanding_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def room(self) -> tuple[int, int]:
        """How many more messages / bytes this consumer may hold (at least one message)."""
        messages = MAX_RESPONSE_MESSAGES
        if self.max_messages:
            messages = min(messages, self.max_messages - self.outstanding_messages)
        size = MAX_RESPONSE_BYTES
        if self.max_bytes:
            size = min(size, self.max_bytes - self.outstanding_bytes)
        return messages, size


class SubscriptionState:
    def __init__(self, config: Proto, topic: TopicState) -> None:
        self.config = config
        self.topic = topic
        self.ordered = config.enable_message_ordering
        self.dead_letter_topic = config.dead_letter_policy.dead_letter_topic or None
        self.max_attempts = config.dead_letter_policy.max_delivery_attempts
        self.backoff = retry_backoff(config)
        # Nacked or expired messages waiting out their retry backoff: (due, seq, entry).
        self.delayed: list[tuple[float, int, Entry]] = []
        self.backlog: deque[Entry] = deque()
        # Ordering: queued messages per key; a key is ready when none of its messages is out.
        self.keyed: dict[str, list[Entry]] = {}
        self.ready_keys: dict[str, None] = {}
        self.busy_keys: dict[str, int] = {}
        self.outstanding: dict[str, Entry] = {}
        self.expiries: list[tuple[float, str]] = []
        self.consumers: set[Lease] = set()
        self.deleted = False

    @property
    def name(self) -> str:
        return str(self.config.name)

    @property
    def push_endpoint(self) -> str:
        return str(self.config.push_config.push_endpoint)

    def retry_delay(self, attempts: int) -> float:
        """The retry policy's exponential backoff after the `attempts`-th delivery failed."""
        if self.backoff is None:
            return 0.0
        low, high = self.backoff
        return float(min(high, low * 2 ** max(attempts - 1, 0)))

    def enqueue(self, entry: Entry, *, first: bool = False) -> None:
        if self.ordered and entry.key:
            queue = self.keyed.setdefault(entry.key, [])
            bisect.insort(queue, entry, key=lambda e: e.seq)
            if entry.key not in self.busy_keys:
                self.ready_keys[entry.key] = None
        elif first:
            self.backlog.appendleft(entry)
        else:
            self.backlog.append(entry)

    def notify(self) -> None:
        for consumer in self.consumers:
            consumer.wake.set()

    def take(self, lease: Lease, ack_ids: Iterator[int], now: float) -> list[Entry]:
        """Lease to `lease` as many messages as its flow control allows, keys in order."""
        max_messages, max_bytes = lease.room()
        if max_messages <= 0 or (max_bytes <= 0 and lease.outstanding_messages):
            return []
        taken: list[Entry] = []
        size = 0

        def fits(entry: Entry) -> bool:
            return len(taken) < max_messages and (
                not taken or size + len(entry.serialized) <= max_bytes
            )

        for key in list(self.ready_keys):
            queue = self.keyed[key]
            count = 0
            while count < len(queue) and fits(queue[count]):
                taken.append(queue[count])
                size += len(queue[count].serialized)
                count += 1
            if count:
                del queue[:count]
                del self.ready_keys[key]
                self.busy_keys[key] = count
                if not queue:
                    del self.keyed[key]
            if len(taken) >= max_messages:
                break
        while self.backlog and fits(self.backlog[0]):
            entry = self.backlog.popleft()
            taken.append(entry)
            size += len(entry.serialized)
        deadline = now + lease.ack_deadline
        for entry in taken:
            entry.attempts += 1
            entry.ack_id = f"{next(ack_ids)}"
            entry.deadline = deadline
            entry.lease = lease
            self.outstanding[entry.ack_id] = entry
            heapq.heappush(self.expiries, (deadline, entry.ack_id))
        lease.outstanding_messages += len(taken)
        lease.outstanding_bytes += size
        return taken

    def release(self, entry: Entry) -> None:
        """The entry's lease ended (ack, nack or expiry): free its consumer's and key's slot."""
        del self.outstanding[entry.ack_id]
        lease = entry.lease
        if lease is not None:
            lease.outstanding_messages -= 1
            lease.outstanding_bytes -= len(entry.serialized)
            lease.wake.set()
            entry.lease = None
        if self.ordered and entry.key:
            left = self.busy_keys[entry.key] - 1
            if left:
                self.busy_keys[entry.key] = left
            else:
                del self.busy_keys[entry.key]
                if entry.key in self.keyed:
                    self.ready_keys[entry.key] = None


@dataclass(eq=False)
class TopicState:
    config: Proto
    subscriptions: list[SubscriptionState] = field(default_factory=list)


def seconds(duration: Proto) -> float:
    return float(duration.seconds + duration.nanos / 1e9)


def retry_backoff(config: Proto) -> tuple[float, float] | None:
    """A subscription's (minimum, maximum) redelivery delay, None without a retry policy."""
    if not config.HasField("retry_policy"):
        return None
    policy = config.retry_policy
    low = seconds(policy.minimum_backoff) if policy.HasField("minimum_backoff") else None
    high = seconds(policy.maximum_backoff) if policy.HasField("maximum_backoff") else None
    low = DEFAULT_MIN_BACKOFF if low is None else low
    high = DEFAULT_MAX_BACKOFF if high is None else high
    if not 0 <= low <= high <= MAX_BACKOFF_LIMIT:
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid retry_policy: need 0 <= minimum_backoff ({low:g}s) <= maximum_backoff "
            f"({high:g}s) <= {MAX_BACKOFF_LIMIT:g}s.",
        )
    return low, high


def validate_push_config(config: Proto) -> None:
    endpoint = config.push_endpoint
    if endpoint and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", endpoint):
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid push_config.push_endpoint ({endpoint!r}): must be an http(s) URL.",
        )
    if config.HasField("no_wrapper"):
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "push_config.no_wrapper: the built-in emulator pushes wrapped messages only.",
        )


class Broker:
    def __init__(self) -> None:
        self.topics: dict[str, TopicState] = {}
        self.subscriptions: dict[str, SubscriptionState] = {}
        self.message_ids = itertools.count(1)
        self.ack_ids = itertools.count(1)
        self.sequence = itertools.count()

    # Topics

    def create_topic(self, topic: Proto) -> Proto:
        parse_name(topic.name, "topics")
        if topic.name in self.topics:
            raise RpcError(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
        self.topics[topic.name] = TopicState(topic)
        return topic

    def topic(self, name: str) -> TopicState:
        parse_name(name, "topics")
        state = self.topics.get(name)
        if state is None:
            raise not_found("Topic", name)
        return state

    def delete_topic(self, name: str) -> None:
        state = self.topic(name)
        del self.topics[name]
        for subscription in state.subscriptions:
            subscription.config.topic = DELETED_TOPIC

    def list_topics(self, project: str) -> list[Proto]:
        prefix = f"projects/{parse_project(project)}/topics/"
        return [t.config for name, t in self.topics.items() if name.startswith(prefix)]

    # Subscriptions

    def create_subscription(self, config: Proto) -> Proto:
        parse_name(config.name, "subscriptions")
        if config.ack_deadline_seconds == 0:
            config.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
        if not MIN_ACK_DEADLINE <= config.ack_deadline_seconds <= MAX_ACK_DEADLINE:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid ack_deadline_seconds ({config.ack_deadline_seconds}): "
                f"must be between {MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE}.",
            )
        if config.HasField("dead_letter_policy"):
            policy = config.dead_letter_policy
            parse_name(policy.dead_letter_topic, "topics")
            if policy.max_delivery_attempts == 0:
                policy.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS
            if not MIN_DELIVERY_ATTEMPTS <= policy.max_delivery_attempts <= MAX_DELIVERY_ATTEMPTS:
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Invalid max_delivery_attempts ({policy.max_delivery_attempts}): must be "
                    f"between {MIN_DELIVERY_ATTEMPTS} and {MAX_DELIVERY_ATTEMPTS}.",
                )
        validate_push_config(config.push_config)
        retry_backoff(config)
        topic = self.topic(config.topic)
        if config.name in self.subscriptions:
            raise RpcError(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
        subscription = SubscriptionState(config, topic)
        topic.subscriptions.append(subscription)
        self.subscriptions[config.name] = subscription
        return config

    def subscription(self, name: str) -> SubscriptionState:
        parse_name(name, "subscriptions")
        state = self.subscriptions.get(name)
        if state is None:
            raise not_found("Subscription", name)
        return state

    def delete_subscription(self, name: str) -> None:
        state = self.subscription(name)
        del self.subscriptions[name]
        if state.topic.config.name in self.topics:
            state.topic.subscriptions.remove(state)
        state.deleted = True
        state.notify()

    def update_subscription(self, config: Proto, paths: Iterable[str]) -> SubscriptionState:
        """UpdateSubscription for the fields the platform changes: delivery and retries."""
        state = self.subscription(config.name)
        paths = list(paths)
        unsupported = set(paths) - UPDATABLE_FIELDS
        if not paths or unsupported:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"update_mask: the built-in emulator updates {sorted(UPDATABLE_FIELDS)}, "
                f"not {sorted(unsupported) or 'nothing'}.",
            )
        updated = type(state.config)()
        updated.CopyFrom(state.config)
        for path in paths:
            updated.ClearField(path)
            if config.HasField(path):
                getattr(updated, path).CopyFrom(getattr(config, path))
        validate_push_config(updated.push_config)
        state.backoff = retry_backoff(updated)
        state.config.CopyFrom(updated)
        state.notify()
        return state

    def modify_push_config(self, name: str, push_config: Proto) -> SubscriptionState:
        """Switch between push (an endpoint) and pull (an empty config)."""
        state = self.subscription(name)
        validate_push_config(push_config)
        state.config.push_config.CopyFrom(push_config)
        state.notify()
        return state

    def list_subscriptions(self, project: str) -> list[Proto]:
        prefix = f"projects/{parse_project(project)}/subscriptions/"
        return [s.config for name, s in self.subscriptions.items() if name.startswith(prefix)]

    # Data plane

    def publish(self, topic_name: str, messages: Iterable[Proto]) -> list[str]:
        topic = self.topic(topic_name)
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        ids: list[str] = []
        for message in messages:
            message_id = str(next(self.message_ids))
            message.message_id = message_id
            message.publish_time.seconds = seconds
            message.publish_time.nanos = nanos
            serialized = message.SerializeToString()
            seq = next(self.sequence)
            for subscription in topic.subscriptions:
                subscription.enqueue(Entry(serialized, message.ordering_key, seq))
            ids.append(message_id)
        for subscription in topic.subscriptions:
            subscription.notify()
        return ids

    def take(self, subscription: SubscriptionState, lease: Lease) -> list[Entry]:
        return subscription.take(lease, self.ack_ids, time.monotonic())

    def acknowledge(self, subscription: SubscriptionState, ack_ids: Iterable[str]) -> None:
        for ack_id in ack_ids:
            entry = subscription.outstanding.get(ack_id)
            if entry is not None:
                subscription.release(entry)

    def modify_ack_deadline(
        self, subscription: SubscriptionState, ack_ids: Iterable[str], seconds: int
    ) -> None:
        if not 0 <= seconds <= MAX_ACK_DEADLINE:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid ack deadline ({seconds}): must be between 0 and {MAX_ACK_DEADLINE}.",
            )
        now = time.monotonic()
        returned = False
        for ack_id in ack_ids:
            entry = subscription.outstanding.get(ack_id)
            if entry is None:
                continue
            if seconds == 0:
                self.return_entry(subscription, entry)
                returned = True
            else:
                entry.deadline = now + seconds
                heapq.heappush(subscription.expiries, (entry.deadline, ack_id))
        if returned:
            subscription.notify()

    def return_entry(self, subscription: SubscriptionState, entry: Entry) -> None:
        """Nacked, failed or expired: redeliver after the retry policy's backoff, or dead-letter
        once it used up its attempts."""
        subscription.release(entry)
        if subscription.dead_letter_topic and entry.attempts >= subscription.max_attempts:
            self.dead_letter(subscription, entry)
            return
        delay = subscription.retry_delay(entry.attempts)
        if delay > 0:
            due = time.monotonic() + delay
            heapq.heappush(subscription.delayed, (due, next(self.sequence), entry))
        else:
            subscription.enqueue(entry, first=True)

    def dead_letter(self, subscription: SubscriptionState, entry: Entry) -> None:
        target = self.topics.get(subscription.dead_letter_topic or "")
        if target is None:
            # The real service keeps retrying delivery while the dead-letter topic is missing.
            subscription.enqueue(entry, first=True)
            return
        message = PUBSUB_MESSAGE.FromString(entry.serialized)
        attributes = message.attributes
        attributes["CloudPubSubDeadLetterSourceSubscription"] = subscription.name.split("/")[3]
        attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] = subscription.name.split("/")[
            1
        ]
        attributes["CloudPubSubDeadLetterSourceDeliveryCount"] = str(entry.attempts)
        message.ClearField("message_id")
        message.ClearField("publish_time")
        self.publish(target.config.name, [message])

    def expire_leases(self) -> None:
        """Return every message whose ack deadline passed (lazy heap: stale items skipped), and
        requeue those whose retry backoff is over."""
        now = time.monotonic()
        for subscription in self.subscriptions.values():
            expiries = subscription.expiries
            returned = False
            delayed = subscription.delayed
            while delayed and delayed[0][0] <= now:
                subscription.enqueue(heapq.heappop(delayed)[2], first=True)
                returned = True
            while expiries and expiries[0][0] <= now:
                deadline, ack_id = heapq.heappop(expiries)
                entry = subscription.outstanding.get(ack_id)
                if entry is not None and entry.deadline == deadline:
                    self.return_entry(subscription, entry)
                    returned = True
            if returned:
                subscription.notify()
            if len(expiries) > 2 * len(subscription.outstanding) + 10_000:
                # Acked messages leave stale heap items behind; drop them in one pass.
                subscription.expiries = [
                    (e.deadline, i) for i, e in subscription.outstanding.items()
                ]
                heapq.heapify(subscription.expiries)
