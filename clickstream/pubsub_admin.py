"""Create the platform's Pub/Sub topics and subscriptions, idempotently.

In Google Cloud, Terraform owns these (terraform/pubsub.tf); locally `clickstream up` (and the
tests) call `ensure_topology` before any service starts: the services themselves never create
them. The delivery settings below are the one local copy of Terraform's; tests/test_pubsub_admin.py
holds the two equal.
"""

from __future__ import annotations

import contextlib

from google.api_core.exceptions import AlreadyExists
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.pubsub_v1 import (
    DeadLetterPolicy,
    PushConfig,
    RetryPolicy,
    SubscriberAsyncClient,
    Subscription,
)
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from clickstream_contract.config import Settings
from gateway.pubsub import emulator_channel, publisher_async_client

# How the processor's subscriptions deliver, as Terraform deploys them.
# A message the processor fails this often goes to the dead-letter topic.
MAX_DELIVERY_ATTEMPTS = 10
# Terraform sets it to the function's timeout: a push unanswered this long is retried.
ACK_DEADLINE_SECONDS = 300
# Pub/Sub's exponential redelivery delay after a failed push (or an expired deadline). Pulled
# subscriptions have no retry policy: the worker retries a failed batch itself before it nacks,
# and Google's emulator, given one, held back messages a killed worker had leased (in 4 of 5
# runs, 1,100-1,900 of 4,000 events were still missing 90 s after the kill; none without).
MINIMUM_BACKOFF_SECONDS = 10
MAXIMUM_BACKOFF_SECONDS = 600
# Where on the function's URL the push lands: Terraform pushes to the service URI itself.
PUSH_PATH = "/"
HOLD_ACK_DEADLINE_SECONDS = 60  # the dead-letter hold subscription, read by people
SWITCHED_FIELDS = ["push_config", "retry_policy"]  # what differs between push and pull


def subscriber_async_client(settings: Settings) -> SubscriberAsyncClient:
    """The generated async client, on a channel to the emulator when one is set."""
    if settings.pubsub_emulator_host is None:
        return SubscriberAsyncClient()
    channel = emulator_channel(settings.pubsub_emulator_host)
    return SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel))


def push_config(push_endpoint: str | None) -> PushConfig:
    """Push to `push_endpoint` (a base URL such as http://127.0.0.1:8090), or pull when None."""
    if push_endpoint is None:
        return PushConfig()
    return PushConfig(push_endpoint=push_endpoint.rstrip("/") + PUSH_PATH)


def retry_policy(push_endpoint: str | None) -> RetryPolicy | None:
    if push_endpoint is None:
        return None
    return RetryPolicy(
        minimum_backoff=Duration(seconds=MINIMUM_BACKOFF_SECONDS),
        maximum_backoff=Duration(seconds=MAXIMUM_BACKOFF_SECONDS),
    )


def processor_subscription(
    settings: Settings, name: str, topic: str, push_endpoint: str | None
) -> Subscription:
    return Subscription(
        name=settings.subscription_path(name),
        topic=settings.topic_path(topic),
        ack_deadline_seconds=ACK_DEADLINE_SECONDS,
        push_config=push_config(push_endpoint),
        retry_policy=retry_policy(push_endpoint),
        dead_letter_policy=DeadLetterPolicy(
            dead_letter_topic=settings.topic_path(settings.dead_letter_topic),
            max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
        ),
    )


def processor_subscriptions(settings: Settings, push_endpoint: str | None) -> list[Subscription]:
    """events and events-bad, delivered to the processor alike (pushed when an endpoint is
    given, else pulled by the streaming-pull worker)."""
    return [
        processor_subscription(
            settings, settings.events_subscription, settings.events_topic, push_endpoint
        ),
        processor_subscription(
            settings, settings.bad_events_subscription, settings.bad_events_topic, push_endpoint
        ),
    ]


def subscriptions(settings: Settings, push_endpoint: str | None = None) -> list[Subscription]:
    dead_letters = Subscription(
        name=settings.subscription_path(settings.dead_letter_subscription),
        topic=settings.topic_path(settings.dead_letter_topic),
        ack_deadline_seconds=HOLD_ACK_DEADLINE_SECONDS,
    )
    return [*processor_subscriptions(settings, push_endpoint), dead_letters]


async def ensure_topology(settings: Settings, push_endpoint: str | None = None) -> None:
    """Topics events, events-bad, dead-letter and their subscriptions; existing ones are kept,
    but the processor's are switched to push to `push_endpoint` (or to pull when None), so one
    emulator serves either topology."""
    publisher = publisher_async_client(settings)
    subscriber = subscriber_async_client(settings)
    try:
        for topic in (settings.events_topic, settings.bad_events_topic, settings.dead_letter_topic):
            with contextlib.suppress(AlreadyExists):
                await publisher.create_topic(name=settings.topic_path(topic))
        for subscription in subscriptions(settings, push_endpoint):
            with contextlib.suppress(AlreadyExists):
                await subscriber.create_subscription(request=subscription)
        for subscription in processor_subscriptions(settings, push_endpoint):
            await subscriber.update_subscription(
                subscription=subscription, update_mask=FieldMask(paths=SWITCHED_FIELDS)
            )
    finally:
        await publisher.transport.close()
        await subscriber.transport.close()
