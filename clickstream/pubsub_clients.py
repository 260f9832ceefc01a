"""Async Pub/Sub clients for the configured endpoint: an emulator or Google Cloud.

The generated async clients ignore `PUBSUB_EMULATOR_HOST` (only the hand-written sync clients
read it), so against an emulator they get an insecure channel to it explicitly.
"""

from __future__ import annotations

import grpc
from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from clickstream.config import Settings

# Same as the official clients: Pub/Sub requests and responses may exceed gRPC's 4 MB default.
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)


def emulator_channel(host: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(host, options=CHANNEL_OPTIONS)


def publisher_async_client(settings: Settings) -> PublisherAsyncClient:
    if settings.pubsub_emulator_host is None:
        return PublisherAsyncClient()
    channel = emulator_channel(settings.pubsub_emulator_host)
    return PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel))


def subscriber_async_client(settings: Settings) -> SubscriberAsyncClient:
    if settings.pubsub_emulator_host is None:
        return SubscriberAsyncClient()
    channel = emulator_channel(settings.pubsub_emulator_host)
    return SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel))
