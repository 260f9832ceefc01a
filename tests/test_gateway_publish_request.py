"""gateway.pubsub.publish_request writes exactly the PublishRequest protobuf would."""

from __future__ import annotations

from google.pubsub_v1.types import PublishRequest, PubsubMessage
from hypothesis import given
from hypothesis import strategies as st

from gateway.pubsub import publish_request

RawRequest = PublishRequest.pb()
RawMessage = PubsubMessage.pb()


@given(
    topic=st.text(min_size=1, max_size=300),
    data=st.binary(max_size=5000) | st.just(b"x" * 300_000),
    attributes=st.dictionaries(st.text(max_size=40), st.text(max_size=200), max_size=6),
)
def test_publish_request_parses_back_to_the_same_message(
    topic: str, data: bytes, attributes: dict[str, str]
) -> None:
    parsed = RawRequest.FromString(publish_request(topic, data, attributes))
    assert parsed == RawRequest(
        topic=topic, messages=[RawMessage(data=data, attributes=attributes)]
    )
