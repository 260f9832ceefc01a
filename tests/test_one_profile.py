"""One shopper, one profile: an event that carries both an anonymous id and a user id links
them as an `identify` does (processor/identities.py), with real PostgreSQL. The README's SDK
example without its identify: browsing anonymously, then a purchase sent with both ids."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

import asyncpg
import pytest
from processor_testing import BASE_TIME, aggregate_mismatches, envelope_of, event

from clickstream_contract import envelope
from processor.core import Message, Processor

SHOE = {"product_id": "P10001", "name": "Trail shoe", "category": "Sports", "price": 89.5,
        "currency": "EUR"}  # fmt: skip


def message(events: list[dict[str, Any]]) -> Message:
    return Message(
        message_id=uuid.uuid4().hex,
        data=envelope_of(events),
        attributes=envelope.attributes("events", len(events)),
    )


def readme_example() -> list[dict[str, Any]]:
    minute = timedelta(minutes=1)
    order = {"order_id": "O-1001", "revenue": 89.5, "currency": "EUR", "items": [SHOE]}
    return [
        event("product_view", at=BASE_TIME, anonymous_id="a-123", product=SHOE),
        event("add_to_cart", at=BASE_TIME + minute, anonymous_id="a-123", product=SHOE),
        event("purchase", at=BASE_TIME + 2 * minute, anonymous_id="a-123", user_id="u-42",
              order=order),
    ]  # fmt: skip


@pytest.mark.parametrize("batches", [[slice(0, 3)], [slice(0, 2), slice(2, 3)]])
async def test_a_purchase_with_both_ids_ends_in_one_profile(
    processor: Processor, pool: asyncpg.Pool, batches: list[slice]
) -> None:
    events = readme_example()
    for part in batches:  # in one batch, or the purchase after the browsing's commit
        await processor.process([message(events[part])])

    profiles = await pool.fetch("SELECT * FROM customers")
    assert [p["visitor_key"] for p in profiles] == ["u-42"]
    [profile] = profiles
    assert profile["anonymous_ids"] == ["a-123"]
    assert (profile["events"], profile["sessions"], profile["orders"]) == (3, 1, 1)
    assert (profile["last_order_id"], float(profile["lifetime_value"])) == ("O-1001", 89.5)
    sessions = await pool.fetch("SELECT visitor_key, events, purchased FROM sessions")
    assert [tuple(s) for s in sessions] == [("u-42", 3, True)]
    async with pool.acquire() as conn:
        assert await aggregate_mismatches(cast(asyncpg.Connection, conn), events) == {}
