"""The Pub/Sub envelope's wire format is a contract between deployments: a gateway and a
processor of different versions run side by side during a rollout, and messages wait in
subscriptions (and the dead-letter hold) across upgrades. A version-1 message, as its bytes and
attributes, must keep decoding, and the encoder must keep writing it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clickstream_contract import envelope

# One group of one event, as the gateway of schema version 1 publishes it.
V1_ATTRIBUTES = {
    "content_type": "application/vnd.clickstream.envelope+msgpack",
    "schema_version": "1",
    "kind": "events",
    "event_count": "1",
}
V1_DATA = bytes.fromhex(
    "83a17601a46b696e64a66576656e7473a667726f7570739184ab72656365697665645f6174d6ff6b081f41a673"
    "6f75726365a3776562a66576656e747391c4337b226576656e745f6964223a2230623765336135322d35663163"
    "2d346334372d396230652d316332643365346635613662227da9636c69656e745f6970ab3230332e302e313133"
    "2e30"
)
EVENT = b'{"event_id":"0b7e3a52-5f1c-4c47-9b0e-1c2d3e4f5a6b"}'
GROUP = envelope.Group(
    received_at=datetime(2026, 11, 26, 12, 0, 1, tzinfo=UTC),
    source="web",
    events=[EVENT],
    client_ip="203.0.113.0",
)


def test_a_version_1_message_decodes() -> None:
    decoded = envelope.decode(V1_DATA, V1_ATTRIBUTES)
    assert (decoded.v, decoded.kind, decoded.groups) == (1, "events", [GROUP])


def test_the_encoder_writes_version_1() -> None:
    assert envelope.attributes("events", 1) == V1_ATTRIBUTES
    assert envelope.encode("events", [GROUP]) == V1_DATA


@pytest.mark.parametrize(
    ("name", "value"),
    [("content_type", "application/json"), ("schema_version", "2")],
)
def test_another_format_is_refused_for_good(name: str, value: str) -> None:
    with pytest.raises(envelope.EnvelopeError, match=name):
        envelope.decode(V1_DATA, {**V1_ATTRIBUTES, name: value})
