"""ensure_topology against a real emulator: creates everything once, then changes nothing; and
`clickstream emulator pubsub` runs it for its project once it listens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from clickstream.emulators.launch import start_pubsub_emulator, stop_process
from clickstream.pubsub_admin import ensure_topology, subscriptions
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


def test_the_emulator_command_creates_the_topology_of_its_project(
    pubsub_project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that `clickstream emulator pubsub`, then `clickstream gateway` and `clickstream
    processor` started by hand, work as they did when the services created topics."""
    proc, host = start_pubsub_emulator(
        "builtin", tmp_path / "emulator.log", env={"GOOGLE_CLOUD_PROJECT": pubsub_project}
    )
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
        subscriber = pubsub_v1.SubscriberClient()
        expected = {s.name for s in subscriptions(Settings(project=pubsub_project))}
        deadline = time.monotonic() + 30
        while (
            found := {
                s.name for s in subscriber.list_subscriptions(project=f"projects/{pubsub_project}")
            }
        ) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert found == expected, (tmp_path / "emulator.log").read_text()
    finally:
        stop_process(proc)
