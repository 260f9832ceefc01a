"""Processor workloads as gateway envelopes (100 events per message, fresh event ids).

- `shoppers`: the load generator's shopper model (`clickstream.shoppers.Traffic`): thousands of
  interleaved sessions of ~1-40 events (client session ids), returning visitors, carts, orders,
  sign-ins (`identify`, ~90 new identity links per 20,000 events).
  The realistic case: a batch touches each session and customer for several events.
- `worst`: each event from one of 5,000 visitors picked at random, no session ids (the processor
  sessionizes), every batch over the same 100 s: nearly every event of a batch is its visitor's
  only one, so it costs a session, a customer and session-state write of its own.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec

from clickstream.shoppers import Traffic
from clickstream_contract import envelope
from processor.core import Message

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/{v}.0.0.0 Safari/537.36"
    for v in range(110, 125)
] + [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    f"Gecko) Version/17.{v} Mobile/15E148 Safari/604.1"
    for v in range(5)
]
REFERRERS = [None, None, "https://www.google.com/", "https://t.co/x", "https://shop.example/"]
TYPES = ["page_view"] * 6 + ["product_view"] * 3 + ["add_to_cart", "search", "purchase"]


def events(count: int, seed: int = 1, visitors: int = 5_000) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for n in range(count):
        kind = rng.choice(TYPES)
        visitor = rng.randrange(visitors)
        body: dict[str, object] = {
            "event_id": str(uuid.uuid4()),
            "event_type": kind,
            "occurred_at": (START + timedelta(milliseconds=20 * n)).isoformat(),
            "anonymous_id": f"anon-{visitor}",
            "page": {
                "url": f"https://shop.example/p/{rng.randrange(800)}"
                + ("?utm_source=news&utm_medium=email" if rng.random() < 0.1 else ""),
                "referrer": rng.choice(REFERRERS),
                "title": "Product page",
            },
            "context": {"user_agent": USER_AGENTS[visitor % len(USER_AGENTS)], "locale": "en-US"},
        }
        if visitor % 4 == 0:
            body["user_id"] = f"user-{visitor}"
        if kind in ("product_view", "add_to_cart"):
            body["product"] = {"product_id": f"sku-{rng.randrange(300)}", "price": 19.99}
        if kind == "purchase":
            body["order"] = {
                "order_id": uuid.uuid4().hex,
                "revenue": 39.98,
                "currency": "EUR",
                "items": [
                    {"product_id": f"sku-{rng.randrange(300)}", "price": 19.99, "quantity": 2}
                ],
            }
        out.append(body)
    return out


def messages(count: int, per_message: int = 100, seed: int = 1) -> list[Message]:
    """`count` events in gateway envelopes of `per_message` events each (the worst case)."""
    return _pack([msgspec.json.encode(e) for e in events(count, seed)], per_message)


def _pack(bodies: list[bytes], per_message: int) -> list[Message]:
    out = []
    for start in range(0, len(bodies), per_message):
        chunk = bodies[start : start + per_message]
        group = envelope.Group(
            received_at=START, source="web", events=chunk, client_ip="203.0.113.0"
        )
        out.append(
            Message(
                message_id=uuid.uuid4().hex,
                data=envelope.encode("events", [group]),
                attributes=envelope.attributes("events", len(chunk)),
            )
        )
    return out


def shopper_batches(
    size: int, per_message: int = 100, seed: int = 1, concurrent: int = 2_000
) -> Iterator[list[Message]]:
    """Consecutive batches of one shopper stream: `concurrent` sessions in progress at once,
    one event every 10 ms (sessions of a few minutes, spanning several batches)."""
    ticks = itertools.count()

    def clock() -> datetime:
        return START + timedelta(milliseconds=10 * next(ticks))

    traffic = Traffic(seed, concurrent=concurrent, clock=clock)
    while True:
        yield _pack([next(traffic).data for _ in range(size)], per_message)


def batches(kind: str, size: int, per_message: int = 100) -> Iterator[list[Message]]:
    """Endless batches of `size` events of the `kind` workload (`shoppers` or `worst`)."""
    if kind == "shoppers":
        return shopper_batches(size, per_message)
    if kind == "worst":
        return (messages(size, per_message, seed) for seed in itertools.count())
    raise ValueError(f"workload {kind!r} must be shoppers or worst")
