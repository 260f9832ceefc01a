"""Typed helpers for the e-commerce events, shared by `Client` and `AsyncClient`.

Each helper builds an event (see `events.py`) and hands it to `enqueue`, which never blocks
and never raises on overload: it returns the new event's id, or None when the client's buffer
is full and the event was dropped (counted in `stats.dropped`, logged).

`identify` links an anonymous id to a user id (an `identify` event carrying both, from which the
platform merges the anonymous profile into the user's). The client remembers the link: later
events that name only that anonymous id carry the user id too, as the browser tracker's do
after its `identify`. It remembers the `REMEMBERED_IDENTITIES` most recent links.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Unpack

from clickstream_contract.event import Context, Event, Page, Product
from clickstream_sdk.events import (
    Common,
    Properties,
    build_event,
    checkout_properties,
    order_of,
    search_properties,
)

REMEMBERED_IDENTITIES: Final = 10_000


class Tracking:
    def __init__(self) -> None:
        self._identities: dict[str, str] = {}  # anonymous id -> user id, oldest link first
        self._identities_lock = threading.Lock()  # helpers may run on several threads

    def enqueue(self, event: Event) -> uuid.UUID | None:
        raise NotImplementedError

    def _identified(self, common: Common) -> Common:
        """`common` with the user id linked to its anonymous id, when it names no user id."""
        anonymous_id = common.get("anonymous_id")
        if anonymous_id and not common.get("user_id"):
            user_id = self._identities.get(anonymous_id)
            if user_id is not None:
                return {**common, "user_id": user_id}
        return common

    def identify(
        self,
        user_id: str,
        *,
        anonymous_id: str,
        traits: Properties | None = None,
        session_id: str | None = None,
        page: Page | None = None,
        context: Context | None = None,
        occurred_at: datetime | None = None,
    ) -> uuid.UUID | None:
        """Link `anonymous_id` (the visitor before sign-in) to `user_id`; `traits` (scalar
        properties such as a plan or a country) travel as the event's properties."""
        for name, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
            if not value:
                raise ValueError(f"identify: `{name}` must not be empty (it links both ids)")
        with self._identities_lock:
            self._identities.pop(anonymous_id, None)
            self._identities[anonymous_id] = user_id
            if len(self._identities) > REMEMBERED_IDENTITIES:
                del self._identities[next(iter(self._identities))]
        return self.enqueue(
            build_event(
                "identify",
                user_id=user_id,
                anonymous_id=anonymous_id,
                properties=traits or None,
                session_id=session_id,
                page=page,
                context=context,
                occurred_at=occurred_at,
            )
        )

    def track(self, event_type: str, **common: Unpack[Common]) -> uuid.UUID | None:
        """A custom event (snake_case name) with free-form scalar `properties`."""
        return self.enqueue(build_event(event_type, **self._identified(common)))

    def page_view(
        self,
        url: str,
        *,
        title: str | None = None,
        referrer: str | None = None,
        **common: Unpack[Common],
    ) -> uuid.UUID | None:
        common["page"] = Page(url=url, title=title, referrer=referrer)
        return self.enqueue(build_event("page_view", **self._identified(common)))

    def product_view(self, product: Product, **common: Unpack[Common]) -> uuid.UUID | None:
        return self.enqueue(
            build_event("product_view", product=product, **self._identified(common))
        )

    def search(
        self, query: str, *, results: int | None = None, **common: Unpack[Common]
    ) -> uuid.UUID | None:
        common["properties"] = {
            **(common.get("properties") or {}),
            **search_properties(query, results),
        }
        return self.enqueue(build_event("search", **self._identified(common)))

    def add_to_cart(self, product: Product, **common: Unpack[Common]) -> uuid.UUID | None:
        return self.enqueue(build_event("add_to_cart", product=product, **self._identified(common)))

    def remove_from_cart(self, product: Product, **common: Unpack[Common]) -> uuid.UUID | None:
        return self.enqueue(
            build_event("remove_from_cart", product=product, **self._identified(common))
        )

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
        return self.enqueue(build_event("begin_checkout", **self._identified(common)))

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
            build_event(
                "purchase",
                order=order_of(order_id, items, currency),
                **self._identified(common),
            )
        )
