"""The event contract: one msgspec Struct tree shared by every part of the platform.

A client sends `Event`s; the gateway validates each one against these types and publishes the
validated JSON bytes unchanged; the processor decodes them with the same types. The JSON Schema
(`event_json_schema()`) is served in the gateway's OpenAPI document.

Unknown fields are refused everywhere (`forbid_unknown_fields`): a typo such as `eventType`
becomes a clear error instead of silently lost data. Free-form data belongs in `properties`.
"""

from __future__ import annotations

import re
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
# The three patterns below are enforced by `Event.__post_init__`, not by msgspec: msgspec runs
# Python's `re` through a slow call per value (~0.33 µs each, 40% of validating an event), while
# values seen valid before (event types, currencies, locales repeat) cost a set lookup there.
# The schema still publishes each pattern; the error messages are msgspec's own format.
EVENT_TYPE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CURRENCY_PATTERN: Final = re.compile(r"^[A-Z]{3}$")
LOCALE_PATTERN: Final = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")

Currency = Annotated[
    str,
    Meta(
        description="ISO 4217 code, e.g. EUR",
        extra_json_schema={"pattern": CURRENCY_PATTERN.pattern},
    ),
]
Money = Annotated[float, Meta(ge=0, le=1e10)]
EventType = Annotated[
    str,
    Meta(
        extra_json_schema={"pattern": EVENT_TYPE_PATTERN.pattern},
        description="One of the standard types, or a custom snake_case name",
        examples=list(STANDARD_EVENT_TYPES),
    ),
]
Locale = Annotated[str, Meta(extra_json_schema={"pattern": LOCALE_PATTERN.pattern})]
PropertyKey = Annotated[str, Meta(min_length=1, max_length=128)]
PropertyValue = Annotated[str, Meta(max_length=1024)] | int | float | bool | None


class Page(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    url: Url | None = None
    referrer: Url | None = None
    title: Annotated[str, Meta(max_length=512)] | None = None


class Campaign(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """UTM parameters; the processor also reads them from `page.url` when absent here."""

    source: ShortText | None = None
    medium: ShortText | None = None
    name: ShortText | None = None
    term: ShortText | None = None
    content: ShortText | None = None


class App(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    name: ShortText | None = None
    version: Annotated[str, Meta(max_length=64)] | None = None


class Device(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    type: Literal["desktop", "mobile", "tablet", "tv", "console", "wearable", "other"] | None = None
    manufacturer: ShortText | None = None
    model: ShortText | None = None


class Context(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    user_agent: Annotated[str, Meta(max_length=1024)] | None = None
    locale: Locale | None = None
    app: App | None = None
    device: Device | None = None
    campaign: Campaign | None = None


class Product(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    product_id: Id
    sku: Id | None = None
    name: ShortText | None = None
    category: ShortText | None = None
    price: Money | None = None
    currency: Currency | None = None
    quantity: Annotated[int, Meta(ge=1, le=10_000)] = 1


class Order(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    order_id: Id
    revenue: Money
    currency: Currency
    items: Annotated[list[Product], Meta(max_length=MAX_ORDER_ITEMS)] = []


class _Pattern:
    """A regex checked against the whole value, with a memo of the values that matched:
    event types, currencies and locales repeat, and a set lookup is much cheaper. The memo is
    bounded so that odd input cannot grow it without end.

    `fullmatch`, not `search` (which msgspec uses): Python's `$` also matches before a final
    newline, so `search` would take "EUR\\n", which the published JSON Schema refuses."""

    __slots__ = ("matched", "regex")

    def __init__(self, regex: re.Pattern[str], known: tuple[str, ...] = ()) -> None:
        self.regex = regex
        self.matched = set(known)

    def matches(self, value: str) -> bool:
        if value in self.matched:
            return True
        if self.regex.fullmatch(value) is None:
            return False
        if len(self.matched) < 4096:
            self.matched.add(value)
        return True

    def error(self, path: str) -> ValueError:
        """msgspec's own message for a pattern mismatch, naming the path from the event."""
        return ValueError(f"Expected `str` matching regex {self.regex.pattern!r} - at `{path}`")


_event_type = _Pattern(EVENT_TYPE_PATTERN, STANDARD_EVENT_TYPES)
_currency = _Pattern(CURRENCY_PATTERN)
_locale = _Pattern(LOCALE_PATTERN)


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


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
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
        # msgspec reports a ValueError raised here as a ValidationError. The pattern errors
        # name their path from the event, the root of every decode whose message is shown.
        # `x in pattern.matched` first: inline, it saves a method call per value (~6%).
        event_type = self.event_type
        if event_type not in _event_type.matched and not _event_type.matches(event_type):
            raise _event_type.error("$.event_type")
        context, product, order = self.context, self.product, self.order
        locale = context.locale if context is not None else None
        if locale is not None and locale not in _locale.matched and not _locale.matches(locale):
            raise _locale.error("$.context.locale")
        currencies = _currency.matched
        currency = product.currency if product is not None else None
        if currency is not None and currency not in currencies and not _currency.matches(currency):
            raise _currency.error("$.product.currency")
        if order is not None:
            if order.currency not in currencies and not _currency.matches(order.currency):
                raise _currency.error("$.order.currency")
            for index, item in enumerate(order.items):
                if item.currency is not None and not _currency.matches(item.currency):
                    raise _currency.error(f"$.order.items[{index}].currency")
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
