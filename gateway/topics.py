"""Create the gateway's topics on an emulator.

Interim: replaced by `clickstream.pubsub_admin.ensure_topology` once it lands.
"""

from __future__ import annotations

import contextlib

from google.api_core.exceptions import AlreadyExists
from google.pubsub_v1 import PublisherClient

from clickstream.config import Settings


def ensure_topics(settings: Settings) -> None:
    client = PublisherClient()
    for topic in (settings.events_topic, settings.bad_events_topic):
        with contextlib.suppress(AlreadyExists):
            client.create_topic(name=settings.topic_path(topic))
