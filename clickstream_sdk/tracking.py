"""Typed helpers for the e-commerce events, shared by `Client` and `AsyncClient`.

Each helper builds an event (see `events.py`) and hands it to `enqueue`, which never blocks
and never raises on overload: it returns the new event's id, or None when the client's buffer
is full and the event was dropped (counted in `stats.dropped`, logged).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Unpack

from clickstream_contract.event import Event, Page, Product
from clickstream_sdk.events import (
    Common,
    build_event,
    checkout_properties,
    order_of,
    search_properties,
)


class Tracking:
    def enqueue(self, event: Event) -> uuid.UUID | None:
        raise NotImplementedError

    def track(self, event_type: str, **common: Unpack[Common]) -> uuid.UUID | None:
        """A custom event (snake_case name) with free-form scalar `properties`."""
        return self.enqueue(build_event(event_type, **common))

    def page_view(
        self,
        url: str,
        *,
        title: str | None = None,
        referrer: str | None = None,
        **common: Unpack[Common],
    ) -> uuid.UUID | None:
        common["page"] = Page(url=url, title=title, referrer=referrer)
        return self.enqueue(build_event("page_view", **common))

    def product_view(self, product: Product, **common: Unpack[Common]) -> uuid.UUID | None:
        return self.enqueue(build_event("product_view", product=product, **common))

    def search(
        self, query: str, *, results: int | None = None, **common: Unpack[Common]
    ) -> uuid.UUID | None:
        common["properties"] = {
            **(common.get("properties") or {}),
            **search_properties(query, results),
        }
        return self.enqueue(build_event("search", **common))

    def add_to_cart(self, product: Product, **common: Unpack[Common]) -> uuid.UUID | None:
        return self.enqueue(build_event("add_to_cart", product=product, **common))

    def remove_from_cart(self, product: Product, **common: Unpack[Common]) -> uuid.UUID | None:
        return self.enqueue(build_event("remove_from_cart", product=product, **common))

    def begin_checkout(
        self,
        items: Sequence[Product],
        *,
        currency: str | None = None,
        **common: Unpack[Common],
    ) -> uuid.UUID | None:
        common["properties"] = {
            **(common.get("properties") or {}),
            **checkout_properties(items, currency),
        }
        return self.enqueue(build_event("begin_checkout", **common))

    def purchase(
        self,
        order_id: str,
        items: Sequence[Product],
        *,
        currency: str,
        **common: Unpack[Common],
    ) -> uuid.UUID | None:
        """A purchase whose revenue is the sum of price x quantity over `items`."""
        return self.enqueue(
            build_event("purchase", order=order_of(order_id, items, currency), **common)
        )
