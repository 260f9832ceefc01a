"""A realistic processor workload: gateway envelopes of browser traffic with repeating user
agents and pages (as real traffic has) and fresh event ids."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from clickstream import envelope
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
    """`count` events in gateway envelopes of `per_message` events each."""
    bodies = [msgspec.json.encode(e) for e in events(count, seed)]
    out = []
    for start in range(0, count, per_message):
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
