"""ensure_topology against a real emulator: creates everything once, then changes nothing but
the delivery mode (push or pull); `clickstream emulator pubsub` runs it for its project once it
listens; and its delivery settings are Terraform's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import terraform_config
from google.cloud import pubsub_v1
from google.pubsub_v1 import Subscription

from clickstream.emulators.launch import start_pubsub_emulator, stop_process
from clickstream.pubsub_admin import (
    ACK_DEADLINE_SECONDS,
    MAX_DELIVERY_ATTEMPTS,
    MAXIMUM_BACKOFF_SECONDS,
    MINIMUM_BACKOFF_SECONDS,
    PUSH_PATH,
    ensure_topology,
    processor_subscriptions,
    subscriptions,
)
from clickstream_contract.config import Settings


async def test_ensure_topology_creates_topics_and_subscriptions_idempotently(
    pubsub_emulator_host: str, pubsub_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(project=pubsub_project, pubsub_emulator_host=pubsub_emulator_host)
    await ensure_topology(settings)
    await ensure_topology(settings)  # second run: everything exists, nothing raises

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_host)
    subscriber = pubsub_v1.SubscriberClient()
    for name, topic in (
        (settings.events_subscription, settings.events_topic),
        (settings.bad_events_subscription, settings.bad_events_topic),
    ):
        got = subscriber.get_subscription(subscription=settings.subscription_path(name))
        assert got.topic == settings.topic_path(topic)
        assert got.ack_deadline_seconds == ACK_DEADLINE_SECONDS
        assert got.dead_letter_policy.dead_letter_topic == settings.topic_path(
            settings.dead_letter_topic
        )
        assert got.dead_letter_policy.max_delivery_attempts == MAX_DELIVERY_ATTEMPTS
        # Pulled by the streaming-pull worker, which retries failed batches itself.
        assert got.push_config.push_endpoint == ""
        assert "retry_policy" not in got
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


async def test_ensure_topology_switches_the_processor_subscriptions_between_push_and_pull(
    pubsub_emulator_host: str, pubsub_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(project=pubsub_project, pubsub_emulator_host=pubsub_emulator_host)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_host)
    subscriber = pubsub_v1.SubscriberClient()

    def delivery() -> list[tuple[str, float]]:
        names = [s.name for s in processor_subscriptions(settings, None)]
        found = [subscriber.get_subscription(subscription=n) for n in names]
        return [
            (s.push_config.push_endpoint, s.retry_policy.minimum_backoff.total_seconds())
            for s in found
        ]

    await ensure_topology(settings)
    await ensure_topology(settings, push_endpoint="http://127.0.0.1:8090")
    pushed = ("http://127.0.0.1:8090/", MINIMUM_BACKOFF_SECONDS)
    assert delivery() == [pushed, pushed]
    await ensure_topology(settings)
    assert delivery() == [("", 0), ("", 0)]


def test_local_delivery_settings_are_terraforms() -> None:
    """Endpoint path, ack deadline, retry policy and dead-lettering of the push subscriptions
    Terraform deploys are those the local subscriptions get."""
    tf = terraform_config.load()
    deployed = tf.resources[("google_pubsub_subscription", "processor")]

    def block(name: str) -> dict[str, object]:
        [body] = deployed[name]
        return dict(body)

    function_uri = "${google_cloudfunctions2_function.processor.service_config[0].uri}"
    endpoint = str(block("push_config")["push_endpoint"])
    assert endpoint.startswith(function_uri)
    assert (endpoint.removeprefix(function_uri) or "/") == PUSH_PATH
    assert tf.resolve(deployed["ack_deadline_seconds"]) == ACK_DEADLINE_SECONDS
    retry = block("retry_policy")
    assert retry == {
        "minimum_backoff": f"{MINIMUM_BACKOFF_SECONDS}s",
        "maximum_backoff": f"{MAXIMUM_BACKOFF_SECONDS}s",
    }
    dead_letter = block("dead_letter_policy")
    assert tf.resolve(dead_letter["max_delivery_attempts"]) == MAX_DELIVERY_ATTEMPTS
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    # Terraform's for_each gives both subscriptions the one body; so does the local code.
    settings = Settings()
    local = processor_subscriptions(settings, push_endpoint="http://127.0.0.1:1")
    assert [s.name.rsplit("/", 1)[1] for s in local] == [
        s["name"].removeprefix("${local.name}-")
        for s in tf.locals["processor_subscriptions"].values()
    ]

    def settings_of(subscription: Subscription) -> tuple[object, ...]:
        return (
            subscription.ack_deadline_seconds,
            subscription.retry_policy,
            subscription.dead_letter_policy,
            subscription.push_config,
        )

    assert len({repr(settings_of(s)) for s in local}) == 1
    assert local[0].dead_letter_policy.dead_letter_topic == settings.topic_path(
        settings.dead_letter_topic
    )


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
