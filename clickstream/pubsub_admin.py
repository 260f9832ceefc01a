"""Create the platform's Pub/Sub topics and subscriptions, idempotently.

In Google Cloud, Terraform owns these; locally `clickstream up` (and the tests) call
`ensure_topology` before any service starts: the services themselves never create them.
"""

from __future__ import annotations

import contextlib

from google.api_core.exceptions import AlreadyExists
from google.pubsub_v1 import DeadLetterPolicy, SubscriberAsyncClient, Subscription
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from clickstream_contract.config import Settings
from gateway.pubsub import emulator_channel, publisher_async_client

# Match terraform: a message the processor fails this often goes to the dead-letter topic.
MAX_DELIVERY_ATTEMPTS = 5
ACK_DEADLINE_SECONDS = 60


def subscriber_async_client(settings: Settings) -> SubscriberAsyncClient:
    """The generated async client, on a channel to the emulator when one is set."""
    if settings.pubsub_emulator_host is None:
        return SubscriberAsyncClient()
    channel = emulator_channel(settings.pubsub_emulator_host)
    return SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel))


def subscriptions(settings: Settings) -> list[Subscription]:
    events = Subscription(
        name=settings.subscription_path(settings.events_subscription),
        topic=settings.topic_path(settings.events_topic),
        ack_deadline_seconds=ACK_DEADLINE_SECONDS,
        dead_letter_policy=DeadLetterPolicy(
            dead_letter_topic=settings.topic_path(settings.dead_letter_topic),
            max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
        ),
    )
    bad_events = Subscription(
        name=settings.subscription_path(settings.bad_events_subscription),
        topic=settings.topic_path(settings.bad_events_topic),
        ack_deadline_seconds=ACK_DEADLINE_SECONDS,
    )
    dead_letters = Subscription(
        name=settings.subscription_path(settings.dead_letter_subscription),
        topic=settings.topic_path(settings.dead_letter_topic),
        ack_deadline_seconds=ACK_DEADLINE_SECONDS,
    )
    return [events, bad_events, dead_letters]


async def ensure_topology(settings: Settings) -> None:
    """Topics events, events-bad, dead-letter and their subscriptions; existing ones are kept."""
    publisher = publisher_async_client(settings)
    subscriber = subscriber_async_client(settings)
    try:
        for topic in (settings.events_topic, settings.bad_events_topic, settings.dead_letter_topic):
            with contextlib.suppress(AlreadyExists):
                await publisher.create_topic(name=settings.topic_path(topic))
        for subscription in subscriptions(settings):
            with contextlib.suppress(AlreadyExists):
                await subscriber.create_subscription(request=subscription)
    finally:
        await publisher.transport.close()
        await subscriber.transport.close()
