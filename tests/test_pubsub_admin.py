"""ensure_topology against a real emulator: creates everything once, then changes nothing."""

from __future__ import annotations

import pytest
from google.cloud import pubsub_v1

from clickstream.pubsub_admin import ensure_topology
from clickstream_contract.config import Settings


async def test_ensure_topology_creates_topics_and_subscriptions_idempotently(
    pubsub_emulator_host: str, pubsub_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(project=pubsub_project, pubsub_emulator_host=pubsub_emulator_host)
    await ensure_topology(settings)
    await ensure_topology(settings)  # second run: everything exists, nothing raises

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_host)
    subscriber = pubsub_v1.SubscriberClient()
    events = subscriber.get_subscription(
        subscription=settings.subscription_path(settings.events_subscription)
    )
    assert events.topic == settings.topic_path(settings.events_topic)
    assert events.ack_deadline_seconds == 60
    assert events.dead_letter_policy.dead_letter_topic == settings.topic_path(
        settings.dead_letter_topic
    )
    assert events.dead_letter_policy.max_delivery_attempts == 5
    bad = subscriber.get_subscription(
        subscription=settings.subscription_path(settings.bad_events_subscription)
    )
    assert bad.topic == settings.topic_path(settings.bad_events_topic)
    held = subscriber.get_subscription(
        subscription=settings.subscription_path(settings.dead_letter_subscription)
    )
    assert held.topic == settings.topic_path(settings.dead_letter_topic)
    publisher = pubsub_v1.PublisherClient()
    topics = {t.name for t in publisher.list_topics(project=f"projects/{pubsub_project}")}
    assert topics == {
        settings.topic_path(name)
        for name in (settings.events_topic, settings.bad_events_topic, settings.dead_letter_topic)
    }
