"""Builders for the e-commerce events, on top of the shared contract (`clickstream_contract.event`).

The clients' typed helpers and the load generator's shoppers build their events here, so an
event type always has the same shape whoever sends it. Every event gets a client-side
`event_id` (uuid4): the platform's dedup key, which makes retries safe.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypedDict

from clickstream_contract.event import Context, Event, Order, Page, Product, PropertyValue

Properties = dict[str, PropertyValue]


class Common(TypedDict, total=False):
    """Fields any event may carry; at least one of `user_id` / `anonymous_id` is required."""

    user_id: str | None
    anonymous_id: str | None
    session_id: str | None
    page: Page | None
    context: Context | None
    properties: Properties | None
    occurred_at: datetime | None


def build_event(
    event_type: str,
    *,
    product: Product | None = None,
    order: Order | None = None,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str | None = None,
    page: Page | None = None,
    context: Context | None = None,
    properties: Properties | None = None,
    occurred_at: datetime | None = None,
) -> Event:
    """A new event with a fresh `event_id`; `occurred_at` defaults to now (UTC).

    The contract's own checks run here (a `ValueError` names the rule): at least one of
    `user_id`/`anonymous_id`, `product` on product events, `order` on purchases.
    """
    return Event(
        event_id=uuid.uuid4(),
        event_type=event_type,
        occurred_at=occurred_at or datetime.now(UTC),
        anonymous_id=anonymous_id,
        user_id=user_id,
        session_id=session_id,
        page=page,
        context=context,
        product=product,
        order=order,
        properties=properties,
    )


def search_properties(query: str, results: int | None = None) -> Properties:
    props: Properties = {"query": query}
    if results is not None:
        props["results"] = results
    return props


def cart_value(items: Sequence[Product]) -> float:
    """Sum of price x quantity, rounded to cents: what an order of these items is worth."""
    return round(sum((item.price or 0.0) * item.quantity for item in items), 2)


def checkout_properties(items: Sequence[Product], currency: str | None = None) -> Properties:
    """`begin_checkout` carries the cart as scalar properties (the contract has no cart)."""
    props: Properties = {
        "value": cart_value(items),
        "item_count": sum(item.quantity for item in items),
    }
    if currency:
        props["currency"] = currency
    return props


def order_of(order_id: str, items: Sequence[Product], currency: str) -> Order:
    """An order whose revenue is exactly the sum of its items."""
    return Order(order_id=order_id, revenue=cart_value(items), currency=currency, items=list(items))
