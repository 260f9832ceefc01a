"""Push delivery for the built-in Pub/Sub emulator, with the real service's wire format.

Each subscription whose `push_config.push_endpoint` is set gets one pusher: it leases messages
like a consumer and POSTs each as Pub/Sub's JSON wrapper, `{"message": {data (base64),
attributes, messageId, publishTime, ...}, "subscription": ..., "deliveryAttempt": n}` (the
attempt only when dead-lettering is on, as the service does). A 2xx answer acks; any other
answer, a refused connection, or no answer within the ack deadline is a failed delivery, which
the broker redelivers after the retry policy's backoff or dead-letters (pubsub_state.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from clickstream.emulators.pubsub_state import (
    PUBSUB_MESSAGE,
    Broker,
    Entry,
    Lease,
    SubscriptionState,
)
from clickstream.emulators.push_client import PushClient

# Pushes in flight per subscription. The real service adapts this to the endpoint's success
# rate; a fixed bound keeps a local endpoint busy (4 instances x 8 threads) without flooding it.
MAX_OUTSTANDING_PUSHES = 64


def push_body(subscription: SubscriptionState, entry: Entry) -> bytes:
    """The wrapped push payload; both spellings of the ids, as the service sends them."""
    message = PUBSUB_MESSAGE.FromString(entry.serialized)
    publish_time = message.publish_time.ToJsonString()
    wrapped: dict[str, Any] = {
        "attributes": dict(message.attributes),
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    if message.data:
        wrapped["data"] = base64.b64encode(message.data).decode()
    if message.ordering_key:
        wrapped["orderingKey"] = message.ordering_key
    body: dict[str, Any] = {"message": wrapped, "subscription": subscription.name}
    if subscription.dead_letter_topic is not None:
        body["deliveryAttempt"] = entry.attempts
    return json.dumps(body).encode()


class Pusher:
    """Delivers one subscription's messages to its push endpoint while it has one."""

    def __init__(self, broker: Broker, subscription: SubscriptionState) -> None:
        self.broker = broker
        self.subscription = subscription
        self.lease = Lease(
            ack_deadline=subscription.config.ack_deadline_seconds,
            max_messages=MAX_OUTSTANDING_PUSHES,
        )
        self.pushes: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return not self.subscription.deleted and bool(self.subscription.push_endpoint)

    async def run(self) -> None:
        # Keep-alive connections, one per push in flight; the deadline bounds each push.
        client = PushClient(self.subscription.push_endpoint, self.lease.ack_deadline)
        self.subscription.consumers.add(self.lease)
        try:
            while self.active:
                if client.endpoint != self.subscription.push_endpoint:  # modified meanwhile
                    client.close()
                    client = PushClient(self.subscription.push_endpoint, self.lease.ack_deadline)
                for entry in self.broker.take(self.subscription, self.lease):
                    task = asyncio.create_task(self.push(client, entry))
                    self.pushes.add(task)
                    task.add_done_callback(self.pushes.discard)
                self.lease.wake.clear()
                await self.lease.wake.wait()
        finally:
            self.subscription.consumers.discard(self.lease)
            for task in list(self.pushes):
                task.cancel()
            client.close()

    async def push(self, client: PushClient, entry: Entry) -> None:
        ack_id = entry.ack_id
        try:
            status = await client.post(push_body(self.subscription, entry))
            delivered = 200 <= status < 300
        except (OSError, TimeoutError, EOFError, ValueError):  # no answer, or no HTTP one
            delivered = False
        # The lease may have expired meanwhile (then the broker already took the message back).
        if self.subscription.outstanding.get(ack_id) is not entry:
            return
        if delivered:
            self.broker.acknowledge(self.subscription, (ack_id,))
        else:
            self.broker.return_entry(self.subscription, entry)
            self.subscription.notify()


class Pushers:
    """One pusher per push subscription, started and stopped as configs change."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.running: dict[str, asyncio.Task[None]] = {}

    def refresh(self, subscription: SubscriptionState) -> None:
        task = self.running.get(subscription.name)
        if task is not None and not task.done():
            return
        if subscription.push_endpoint and not subscription.deleted:
            self.running[subscription.name] = asyncio.create_task(
                Pusher(self.broker, subscription).run()
            )

    def stop(self) -> None:
        for task in self.running.values():
            task.cancel()
