"""The built-in Pub/Sub emulator's gRPC face: google.pubsub.v1 Publisher and Subscriber.

Pull and streaming pull are served here; push subscriptions are delivered by pubsub_push.py.
Services are registered with generic handlers over the official message types
(`google.pubsub_v1.types.X.pb()`), so no generated code is needed. Pull responses are written
straight from each message's stored bytes (`encode_received`), never re-serialized.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

from clickstream.emulators.pubsub_push import Pushers
from clickstream.emulators.pubsub_state import (
    MAX_ACK_DEADLINE,
    MAX_REQUEST_BYTES,
    MIN_ACK_DEADLINE,
    Broker,
    Entry,
    Lease,
    RpcError,
    SubscriptionState,
)
from gateway.protobuf_wire import varint

EXPIRY_INTERVAL = 0.1  # seconds between sweeps for expired ack deadlines
MAX_PULL_WAIT = 10.0  # a Pull with nothing to deliver waits at most this long
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
MAX_ORDERING_KEY_BYTES = 1024


def pb(message_type: Any) -> Any:
    return message_type.pb()


# Wire encoding of ReceivedMessage {1: ack_id, 2: message, 3: delivery_attempt}, repeated as
# field 1 of PullResponse and StreamingPullResponse.


def encode_received(entries: Iterable[Entry], with_attempts: bool) -> bytes:
    parts: list[bytes] = []
    for entry in entries:
        ack_id = entry.ack_id.encode()
        body = b"\x0a" + varint(len(ack_id)) + ack_id
        body += b"\x12" + varint(len(entry.serialized))
        tail = b"\x18" + varint(entry.attempts) if with_attempts else b""
        length = len(body) + len(entry.serialized) + len(tail)
        parts += (b"\x0a", varint(length), body, entry.serialized, tail)
    return b"".join(parts)


def validate_messages(messages: Iterable[Any]) -> None:
    count = 0
    for message in messages:
        count += 1
        if not message.data and not message.attributes:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Some messages are empty: each message must have non-empty data, "
                "or at least one attribute.",
            )
        if len(message.attributes) > MAX_ATTRIBUTES:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"A message has more than {MAX_ATTRIBUTES} attributes.",
            )
        for key, value in message.attributes.items():
            if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES:
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Invalid attribute key {key!r}: must be 1 to {MAX_ATTRIBUTE_KEY_BYTES} bytes.",
                )
            if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Attribute {key!r} value is longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes.",
                )
        if len(message.ordering_key.encode()) > MAX_ORDERING_KEY_BYTES:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"ordering_key is longer than {MAX_ORDERING_KEY_BYTES} bytes.",
            )
    if count == 0:
        raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "The request contains no messages.")


def validate_stream_deadline(seconds: int) -> None:
    if not MIN_ACK_DEADLINE <= seconds <= MAX_ACK_DEADLINE:
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid stream_ack_deadline_seconds ({seconds}): must be between "
            f"{MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE}.",
        )


class Servicer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.pushers = Pushers(broker)

    # Publisher

    def create_topic(self, request: Any) -> Any:
        return self.broker.create_topic(request)

    def get_topic(self, request: Any) -> Any:
        return self.broker.topic(request.topic).config

    def delete_topic(self, request: Any) -> Any:
        self.broker.delete_topic(request.topic)
        return empty_pb2.Empty()

    def list_topics(self, request: Any) -> Any:
        return pb(types.ListTopicsResponse)(topics=self.broker.list_topics(request.project))

    def list_topic_subscriptions(self, request: Any) -> Any:
        names = [s.name for s in self.broker.topic(request.topic).subscriptions]
        return pb(types.ListTopicSubscriptionsResponse)(subscriptions=names)

    def publish(self, request: Any) -> Any:
        if request.ByteSize() > MAX_REQUEST_BYTES:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.",
            )
        self.broker.topic(request.topic)  # NOT_FOUND before judging the messages
        validate_messages(request.messages)
        ids = self.broker.publish(request.topic, request.messages)
        return pb(types.PublishResponse)(message_ids=ids)

    # Subscriber

    def create_subscription(self, request: Any) -> Any:
        config = self.broker.create_subscription(request)
        self.pushers.refresh(self.broker.subscription(config.name))
        return config

    def update_subscription(self, request: Any) -> Any:
        subscription = self.broker.update_subscription(
            request.subscription, request.update_mask.paths
        )
        self.pushers.refresh(subscription)
        return subscription.config

    def modify_push_config(self, request: Any) -> Any:
        subscription = self.broker.modify_push_config(request.subscription, request.push_config)
        self.pushers.refresh(subscription)
        return empty_pb2.Empty()

    def get_subscription(self, request: Any) -> Any:
        return self.broker.subscription(request.subscription).config

    def delete_subscription(self, request: Any) -> Any:
        self.broker.delete_subscription(request.subscription)
        return empty_pb2.Empty()

    def list_subscriptions(self, request: Any) -> Any:
        subscriptions = self.broker.list_subscriptions(request.project)
        return pb(types.ListSubscriptionsResponse)(subscriptions=subscriptions)

    def acknowledge(self, request: Any) -> Any:
        subscription = self.broker.subscription(request.subscription)
        self.broker.acknowledge(subscription, request.ack_ids)
        return empty_pb2.Empty()

    def modify_ack_deadline(self, request: Any) -> Any:
        subscription = self.broker.subscription(request.subscription)
        self.broker.modify_ack_deadline(subscription, request.ack_ids, request.ack_deadline_seconds)
        return empty_pb2.Empty()

    async def pull(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        subscription = self.broker.subscription(request.subscription)
        if request.max_messages <= 0:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be a positive integer."
            )
        lease = Lease(
            ack_deadline=subscription.config.ack_deadline_seconds,
            max_messages=request.max_messages,
        )
        remaining = context.time_remaining()
        wait = MAX_PULL_WAIT if remaining is None else min(MAX_PULL_WAIT, remaining - 0.5)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + max(wait, 0.0)
        subscription.consumers.add(lease)
        try:
            while True:
                entries = self.broker.take(subscription, lease)
                if entries or request.return_immediately or subscription.deleted:
                    break
                lease.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lease.wake.wait(), give_up - loop.time())
                if loop.time() >= give_up:
                    entries = self.broker.take(subscription, lease)
                    break
        finally:
            subscription.consumers.discard(lease)
        return encode_received(entries, subscription.dead_letter_topic is not None)

    def apply_stream_request(self, subscription: SubscriptionState, request: Any) -> None:
        if request.ack_ids:
            self.broker.acknowledge(subscription, request.ack_ids)
        ids, seconds = request.modify_deadline_ack_ids, request.modify_deadline_seconds
        if len(ids) != len(seconds):
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "modify_deadline_seconds and modify_deadline_ack_ids must have the same length.",
            )
        for ack_id, deadline in zip(ids, seconds, strict=True):
            self.broker.modify_ack_deadline(subscription, (ack_id,), deadline)

    async def streaming_pull(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        first = await anext(requests, None)
        if first is None:
            return
        subscription = self.broker.subscription(first.subscription)
        validate_stream_deadline(first.stream_ack_deadline_seconds)
        lease = Lease(
            ack_deadline=first.stream_ack_deadline_seconds,
            max_messages=max(first.max_outstanding_messages, 0),
            max_bytes=max(first.max_outstanding_bytes, 0),
        )
        self.apply_stream_request(subscription, first)
        with_attempts = subscription.dead_letter_topic is not None
        failure: list[RpcError] = []
        closed = asyncio.Event()

        async def read() -> None:
            # Acks, modacks, deadline changes and heartbeats arrive while we deliver.
            try:
                async for request in requests:
                    if request.stream_ack_deadline_seconds:
                        validate_stream_deadline(request.stream_ack_deadline_seconds)
                        lease.ack_deadline = request.stream_ack_deadline_seconds
                    self.apply_stream_request(subscription, request)
            except RpcError as error:
                failure.append(error)
            finally:
                closed.set()
                lease.wake.set()

        reader = asyncio.create_task(read())
        subscription.consumers.add(lease)
        try:
            while not closed.is_set() and not subscription.deleted:
                entries = self.broker.take(subscription, lease)
                if entries:
                    yield encode_received(entries, with_attempts)
                    continue
                lease.wake.clear()
                await lease.wake.wait()
        finally:
            # Messages still leased to this stream are redelivered when their deadline passes.
            subscription.consumers.discard(lease)
            reader.cancel()
        if failure:
            raise failure[0]
        if subscription.deleted:
            raise RpcError(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")


# gRPC plumbing: RpcError becomes the call's status.

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def unary(method: Callable[[Any], Any]) -> Handler:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return method(request)
        except RpcError as error:
            await context.abort(error.code, error.message)

    return handle


def unary_async(method: Handler) -> Handler:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except RpcError as error:
            await context.abort(error.code, error.message)

    return handle


def streaming(
    method: Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[bytes]],
) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[bytes]]:
    async def handle(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        try:
            async for response in method(requests, context):
                yield response
        except RpcError as error:
            await context.abort(error.code, error.message)

    return handle


def raw(data: bytes) -> bytes:
    return data


def handlers(servicer: Servicer) -> list[grpc.GenericRpcHandler]:
    def rpc(method: Callable[..., Any], request_type: Any, response_type: Any | None) -> Any:
        request_pb = pb(request_type) if hasattr(request_type, "pb") else request_type
        serialize = raw if response_type is None else lambda m: m.SerializeToString()
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request_pb.FromString, response_serializer=serialize
        )

    empty = empty_pb2.Empty
    publisher = {
        "CreateTopic": rpc(unary(servicer.create_topic), types.Topic, types.Topic),
        "GetTopic": rpc(unary(servicer.get_topic), types.GetTopicRequest, types.Topic),
        "DeleteTopic": rpc(unary(servicer.delete_topic), types.DeleteTopicRequest, empty),
        "ListTopics": rpc(
            unary(servicer.list_topics), types.ListTopicsRequest, types.ListTopicsResponse
        ),
        "ListTopicSubscriptions": rpc(
            unary(servicer.list_topic_subscriptions),
            types.ListTopicSubscriptionsRequest,
            types.ListTopicSubscriptionsResponse,
        ),
        "Publish": rpc(unary(servicer.publish), types.PublishRequest, types.PublishResponse),
    }
    subscriber = {
        "CreateSubscription": rpc(
            unary(servicer.create_subscription), types.Subscription, types.Subscription
        ),
        "UpdateSubscription": rpc(
            unary(servicer.update_subscription), types.UpdateSubscriptionRequest, types.Subscription
        ),
        "GetSubscription": rpc(
            unary(servicer.get_subscription), types.GetSubscriptionRequest, types.Subscription
        ),
        "DeleteSubscription": rpc(
            unary(servicer.delete_subscription), types.DeleteSubscriptionRequest, empty
        ),
        "ListSubscriptions": rpc(
            unary(servicer.list_subscriptions),
            types.ListSubscriptionsRequest,
            types.ListSubscriptionsResponse,
        ),
        "ModifyPushConfig": rpc(
            unary(servicer.modify_push_config), types.ModifyPushConfigRequest, empty
        ),
        "Acknowledge": rpc(unary(servicer.acknowledge), types.AcknowledgeRequest, empty),
        "ModifyAckDeadline": rpc(
            unary(servicer.modify_ack_deadline), types.ModifyAckDeadlineRequest, empty
        ),
        "Pull": rpc(unary_async(servicer.pull), types.PullRequest, None),
        "StreamingPull": grpc.stream_stream_rpc_method_handler(
            streaming(servicer.streaming_pull),
            request_deserializer=pb(types.StreamingPullRequest).FromString,
            response_serializer=raw,
        ),
    }
    return [
        grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
        grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
    ]


async def expire_leases_forever(broker: Broker) -> None:
    while True:
        await asyncio.sleep(EXPIRY_INTERVAL)
        broker.expire_leases()


async def serve(
    host: str, port: int, on_listening: Callable[[str], Awaitable[None]] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; `on_listening(host:port)` runs once the server is up."""
    broker = Broker()
    servicer = Servicer(broker)
    # Requests over 10 MB must reach us to get the real service's INVALID_ARGUMENT.
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    )
    server.add_generic_rpc_handlers(handlers(servicer))
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise SystemExit(f"cannot listen on {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    expiry = asyncio.create_task(expire_leases_forever(broker))
    shown = f"[{host}]" if ":" in host else host
    print(f"PUBSUB_EMULATOR_HOST={shown}:{bound}  (built-in Pub/Sub emulator)", flush=True)
    try:
        if on_listening is not None:
            await on_listening(f"{shown}:{bound}")
        await stop.wait()
    finally:
        expiry.cancel()
        servicer.pushers.stop()
        await server.stop(grace=1)


def run(host: str, port: int, on_listening: Callable[[str], Awaitable[None]] | None = None) -> int:
    asyncio.run(serve(host, port, on_listening))
    return 0
