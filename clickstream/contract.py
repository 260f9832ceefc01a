"""The event contract: one msgspec Struct tree shared by every part of the platform.

A client sends `Event`s; the gateway validates each one against these types and publishes the
validated JSON bytes unchanged; the processor decodes them with the same types. The JSON Schema
(`event_json_schema()`) is served in the gateway's OpenAPI document.

Unknown fields are refused everywhere (`forbid_unknown_fields`): a typo such as `eventType`
becomes a clear error instead of silently lost data. Free-form data belongs in `properties`.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

STANDARD_EVENT_TYPES: Final = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "purchase",
)
# Event types that describe one product and therefore must carry `product`.
PRODUCT_EVENT_TYPES: Final = frozenset({"product_view", "add_to_cart", "remove_from_cart"})

MAX_PROPERTIES: Final = 64
MAX_ORDER_ITEMS: Final = 100
# Clocks on phones drift; events stamped further ahead than this are refused.
MAX_CLOCK_AHEAD: Final = timedelta(hours=24)
EARLIEST_OCCURRED_AT: Final = datetime(2000, 1, 1, tzinfo=UTC)

Id = Annotated[str, Meta(min_length=1, max_length=128, description="Opaque identifier")]
ShortText = Annotated[str, Meta(max_length=256)]
Url = Annotated[str, Meta(max_length=2048)]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]
Money = Annotated[float, Meta(ge=0, le=1e10)]
EventType = Annotated[
    str,
    Meta(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="One of the standard types, or a custom snake_case name",
        examples=list(STANDARD_EVENT_TYPES),
    ),
]
PropertyKey = Annotated[str, Meta(min_length=1, max_length=128)]
PropertyValue = Annotated[str, Meta(max_length=1024)] | int | float | bool | None


class Page(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    url: Url | None = None
    referrer: Url | None = None
    title: Annotated[str, Meta(max_length=512)] | None = None


class Campaign(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """UTM parameters; the processor also reads them from `page.url` when absent here."""

    source: ShortText | None = None
    medium: ShortText | None = None
    name: ShortText | None = None
    term: ShortText | None = None
    content: ShortText | None = None


class App(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: ShortText | None = None
    version: Annotated[str, Meta(max_length=64)] | None = None


class Device(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: Literal["desktop", "mobile", "tablet", "tv", "console", "wearable", "other"] | None = None
    manufacturer: ShortText | None = None
    model: ShortText | None = None


class Context(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    user_agent: Annotated[str, Meta(max_length=1024)] | None = None
    locale: Annotated[str, Meta(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")] | None = None
    app: App | None = None
    device: Device | None = None
    campaign: Campaign | None = None


class Product(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    product_id: Id
    sku: Id | None = None
    name: ShortText | None = None
    category: ShortText | None = None
    price: Money | None = None
    currency: Currency | None = None
    quantity: Annotated[int, Meta(ge=1, le=10_000)] = 1


class Order(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    order_id: Id
    revenue: Money
    currency: Currency
    items: Annotated[list[Product], Meta(max_length=MAX_ORDER_ITEMS)] = []


_latest = (0.0, EARLIEST_OCCURRED_AT)


def latest_occurred_at() -> datetime:
    """Now + MAX_CLOCK_AHEAD, recomputed at most once a second: computing it per event was
    ~8% of the time spent validating one (the bound lags by at most a second)."""
    global _latest
    checked, latest = _latest
    now = time.monotonic()
    if now - checked >= 1.0:
        latest = datetime.now(UTC) + MAX_CLOCK_AHEAD
        _latest = (now, latest)
    return latest


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One clickstream event as a client sends it."""

    event_id: uuid.UUID
    event_type: EventType
    occurred_at: Annotated[datetime, Meta(tz=True)]
    anonymous_id: Id | None = None
    user_id: Id | None = None
    session_id: Id | None = None
    page: Page | None = None
    context: Context | None = None
    product: Product | None = None
    order: Order | None = None
    properties: (
        Annotated[dict[PropertyKey, PropertyValue], Meta(max_length=MAX_PROPERTIES)] | None
    ) = None

    def __post_init__(self) -> None:
        # msgspec reports a ValueError raised here as a ValidationError with the JSON path.
        if self.anonymous_id is None and self.user_id is None:
            raise ValueError("at least one of `anonymous_id` or `user_id` is required")
        if self.event_type in PRODUCT_EVENT_TYPES and self.product is None:
            raise ValueError(f"`product` is required for `{self.event_type}` events")
        if self.event_type == "purchase" and self.order is None:
            raise ValueError("`order` is required for `purchase` events")
        if self.occurred_at < EARLIEST_OCCURRED_AT:
            raise ValueError("`occurred_at` must be after 2000-01-01")
        if self.occurred_at > latest_occurred_at():
            raise ValueError("`occurred_at` must not be more than 24 hours in the future")


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /v1/batch`. Events stay raw so each is validated (and rejected) alone."""

    events: list[msgspec.Raw]


def event_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for `Event` and its parts, with `$defs`."""
    return msgspec.json.schema(Event)
