"""Segment-compatible ingestion: Segment's HTTP tracking API, mapped onto our event contract.

A shop that tracks with Segment's SDKs switches by changing the host (and write key) only.

Routes (all `POST`, same auth, gzip and body handling as our own routes, see `gateway.parsing`):

- `/v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`, `/v1/group`, `/v1/alias`: one message,
  whose type is the path's (a `type` in the body is ignored, as Segment does).
- `/v1/batch` with Segment's body `{"batch": [...], "sentAt": ..., "context": ...}`: the same path
  as our own `{"events": [...]}`; our decoder runs first and only a body it refuses is tried as
  Segment's, so our batches pay nothing. `/v1/import` takes the same Segment batch body.
- analytics.js (`@segment/analytics-next` in browsers): `/v1/t`, `/v1/p`, `/v1/s`, `/v1/i`,
  `/v1/g`, `/v1/a` (one message; the first letter of its type) and `/v1/b` (a Segment batch), as
  `text/plain`, with the write key in the body's `writeKey` (newer versions also send it as the
  Basic username). On these routes alone the gateway reads the body before it authenticates.

Limits: Segment's 32 KB per message and 500 KB per batch, or ours where stricter (and at most
our `max_batch_events` messages). Answers: `200 {"success": true, "accepted": n, "rejected":
[{"index": i, "error": "..."}]}` once the accepted events are durably published (Segment's SDKs
treat any 2xx as done and retry 429/5xx). A message that cannot be mapped or breaks the contract
is rejected alone and published as a bad event with its original bytes, like ours.

Mapping (see docs/segment.md for the full table):

- `messageId` becomes `event_id` = uuid5(NAMESPACE, source + messageId), so a retried message
  dedupes even though Segment message ids need not be UUIDs. A message without one gets an id
  derived from its bytes (an identical retry still dedupes).
- `occurred_at` follows Segment's clock-skew correction: receivedAt - (sentAt - timestamp) when
  the client says when it sent (message `sentAt`, else the batch's), else `timestamp`, else
  the time the gateway received it.
- Segment's e-commerce spec events map to our standard types with `product` / `order`; other
  tracks become custom events named in snake_case; `page` and `screen` become `page_view`;
  `identify`, `group`, `alias` keep their names (`identify` and `alias` carry both ids, and the
  processor merges the anonymous profile into the user's).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from clickstream_contract.answers import Rejection
from clickstream_contract.event import STANDARD_EVENT_TYPES, PropertyValue
from gateway.parsing import HTTPError
from gateway.responses import send_json
from gateway.settings import GatewaySettings
from gateway.types import Answer, Check, Headers, Send
from gateway.validation import Checked, event_error

MAX_MESSAGE_BYTES: Final = 32 * 1024
MAX_BATCH_BYTES: Final = 500 * 1024
# Fixed forever: changing it would make retried messages count twice.
NAMESPACE: Final = uuid.UUID("3f6c2a8e-1d4b-5c7e-9a0f-6b2d8e4c1a57")

SINGLE_TYPES: Final = {
    "/v1/track": "track",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/identify": "identify",
    "/v1/group": "group",
    "/v1/alias": "alias",
}
BATCH_PATHS: Final = ("/v1/batch", "/v1/import")
# analytics.js posts to `<apiHost>/<first letter of the type>`, and batches to `<apiHost>/b`.
BROWSER_TYPES: Final = {
    "/v1/t": "track",
    "/v1/p": "page",
    "/v1/s": "screen",
    "/v1/i": "identify",
    "/v1/g": "group",
    "/v1/a": "alias",
}
BROWSER_BATCH_PATH: Final = "/v1/b"
# Routes whose write key may be inside the body (analytics.js): the body is read before auth.
KEY_IN_BODY_PATHS: Final = frozenset({*BROWSER_TYPES, BROWSER_BATCH_PATH})

# Segment e-commerce spec event (in snake_case, so "Product Viewed" and "product_viewed" match)
# -> our standard type.
ECOMMERCE: Final = {
    "products_searched": "search",
    "product_viewed": "product_view",
    "product_added": "add_to_cart",
    "product_removed": "remove_from_cart",
    "checkout_started": "begin_checkout",
    "order_completed": "purchase",
}
# Names a custom track must not take: they mean something else here.
RESERVED_TYPES: Final = frozenset(STANDARD_EVENT_TYPES) | {"identify", "alias", "group"}
# Segment's default currency for revenue when the message names none.
DEFAULT_CURRENCY: Final = "USD"
DEVICE_TYPES: Final = {
    "ios": "mobile",
    "android": "mobile",
    "phone": "mobile",
    "mobile": "mobile",
    "desktop": "desktop",
    "tablet": "tablet",
    "tv": "tv",
    "console": "console",
    "wearable": "wearable",
}

Scalar = str | int | float | bool | None


class MappingError(ValueError):
    """The message cannot become an event; the text names Segment's field."""


# Segment's message format, leniently: unknown fields (integrations, channel, version...) are
# ignored; a wrong type in a field we read is an error naming its path.
class SegmentPage(msgspec.Struct):
    url: str | None = None
    referrer: str | None = None
    title: str | None = None


class SegmentContext(msgspec.Struct, rename="camel"):
    user_agent: str | None = None
    locale: str | None = None
    page: SegmentPage | None = None
    app: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    campaign: dict[str, Any] | None = None


Id = str | int | None


class SegmentMessage(msgspec.Struct, rename="camel"):
    """One Segment message; fields not listed (integrations...) are ignored (docs/segment.md)."""

    type: str | None = None
    message_id: Id = None
    anonymous_id: Id = None
    user_id: Id = None
    timestamp: datetime | None = None
    sent_at: datetime | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    group_id: Id = None
    previous_id: Id = None


class SegmentBatch(msgspec.Struct, rename="camel"):
    batch: list[msgspec.Raw] | None = None
    sent_at: datetime | None = None
    # Batch-level context is merged under each message's own.
    context: dict[str, Any] | None = None


class BodyWriteKey(msgspec.Struct, rename="camel"):
    write_key: str | None = None


class SuccessResponse(msgspec.Struct):
    success: bool
    accepted: int
    rejected: list[Rejection]


_message_decoder = msgspec.json.Decoder(SegmentMessage)
_batch_decoder = msgspec.json.Decoder(SegmentBatch)
# Syntax only (values skipped untyped): tells "not JSON" (400) from "not a message" (rejected).
_json_check = msgspec.json.Decoder(msgspec.Raw)
_write_key_decoder = msgspec.json.Decoder(BodyWriteKey)
_encode = msgspec.json.Encoder().encode


def body_write_key(body: bytes) -> bytes:
    """analytics.js's `writeKey` in the body; b"" when there is none to read (the request then
    needs a key in a header, else it gets 401)."""
    try:
        return (_write_key_decoder.decode(body).write_key or "").encode()
    except (msgspec.DecodeError, RecursionError):  # not an object with a string writeKey
        return b""


async def send_success(
    send: Send, accepted: int, rejected: list[Rejection], headers: Headers
) -> int:
    await send_json(send, 200, _encode(SuccessResponse(True, accepted, rejected)), headers)
    return 200


# --- mapping -------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def snake_case(name: str) -> str:
    """`Signed Up` -> `signed_up`, `videoPlayed` -> `video_played` ('' when nothing is left)."""
    return _NOT_WORD.sub("_", _CAMEL.sub("_", name).lower()).strip("_")


def custom_event_type(name: str) -> str:
    """A custom track's event type: snake_case within our pattern, never a reserved name."""
    snake = snake_case(name)
    if not snake:
        raise MappingError(f"`event` {name!r} has no letters or digits to name an event type")
    if not snake[0].isalpha():
        snake = f"event_{snake}"
    if snake in RESERVED_TYPES:
        snake = f"track_{snake}"
    return snake[:64].rstrip("_")


def event_id(source: str, message_id: Id, raw: bytes) -> str:
    if message_id is None or message_id == "":
        key = "bytes:" + hashlib.blake2b(raw, digest_size=16).hexdigest()
    else:
        key = f"id:{message_id}"
    return str(uuid.uuid5(NAMESPACE, f"{source}\x00{key}"))


def occurred_at(
    message: SegmentMessage, batch_sent_at: datetime | None, received_at: datetime
) -> str:
    """Segment's timestamp rule: correct the client's clock by how far off its `sentAt` was."""
    timestamp = _aware(message.timestamp)
    sent_at = _aware(message.sent_at or batch_sent_at)
    if timestamp is None:
        at = received_at
    elif sent_at is None:
        at = timestamp
    else:
        at = received_at - (sent_at - timestamp)
    return at.isoformat()


def _aware(moment: datetime | None) -> datetime | None:
    # Segment reads timestamps without an offset as UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _id(value: Id) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _number(value: Any) -> Any:
    """Numbers sent as strings ("19.99") become numbers; anything else is left for the contract
    to refuse with its path."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _quantity(value: Any) -> Any:
    value = _number(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _currency(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def flatten(properties: Mapping[str, Any]) -> dict[str, Scalar]:
    """Our properties are scalars: nested objects and arrays become JSON strings."""
    flat: dict[str, Scalar] = {}
    for key, value in properties.items():
        if value is None or isinstance(value, str | int | float | bool):
            flat[key] = value
        else:
            flat[key] = _encode(value).decode()
    return flat


def product_of(fields: Mapping[str, Any], where: str, currency: Any = None) -> dict[str, Any]:
    """Our `Product` from a Segment product (`product_id`, else `id`, else `sku`)."""
    product_id = _id(fields.get("product_id")) or _id(fields.get("id")) or _id(fields.get("sku"))
    if product_id is None:
        raise MappingError(f"`{where}.product_id` (or `id` or `sku`) is required")
    product: dict[str, Any] = {"product_id": product_id}
    if _id(fields.get("sku")) is not None:
        product["sku"] = _id(fields["sku"])
    for name in ("name", "category"):
        if fields.get(name) is not None:
            product[name] = fields[name]
    if fields.get("price") is not None:
        product["price"] = _number(fields["price"])
    currency = fields.get("currency", currency)
    if currency is not None:
        product["currency"] = _currency(currency)
    if fields.get("quantity") is not None:
        product["quantity"] = _quantity(fields["quantity"])
    return product


PRODUCT_KEYS: Final = (
    "product_id",
    "id",
    "sku",
    "name",
    "category",
    "price",
    "currency",
    "quantity",
)


def _products(properties: dict[str, Any]) -> list[dict[str, Any]]:
    products = properties.pop("products", None) or []
    if not isinstance(products, list) or not all(isinstance(p, dict) for p in products):
        raise MappingError("`properties.products` must be an array of objects")
    return products


def _order(properties: dict[str, Any], event: str) -> dict[str, Any]:
    """Our `Order` from Order Completed: revenue, else total, else the sum of the products."""
    order_id = _id(properties.pop("order_id", None))
    if order_id is None:
        raise MappingError(f"`properties.order_id` is required for `{event}`")
    currency = _currency(properties.pop("currency", None) or DEFAULT_CURRENCY)
    items = [
        product_of(p, f"properties.products[{i}]", currency)
        for i, p in enumerate(_products(properties))
    ]
    if properties.get("revenue") is not None:
        revenue = _number(properties.pop("revenue"))
    elif properties.get("total") is not None:
        revenue = _number(properties.pop("total"))
    elif items:
        revenue = round(
            sum(float(i.get("price") or 0) * float(i.get("quantity", 1)) for i in items), 2
        )
    else:
        raise MappingError(f"`properties.revenue` or `properties.total` is required for `{event}`")
    return {"order_id": order_id, "revenue": revenue, "currency": currency, "items": items}


def _checkout(properties: dict[str, Any]) -> None:
    """Checkout Started: our contract has no cart, so the products become `item_count` (and
    `value` when the message has none), like our own SDK's `begin_checkout`."""
    products = _products(properties)
    if products:
        quantities = [_quantity(p.get("quantity", 1)) for p in products]
        properties.setdefault("item_count", sum(q for q in quantities if isinstance(q, int)))
        if properties.get("value") is None and properties.get("revenue") is None:
            properties["value"] = round(
                sum(
                    float(_number(p.get("price")) or 0) * q
                    for p, q in zip(products, quantities, strict=True)
                    if isinstance(q, int) and isinstance(_number(p.get("price")), float | int)
                ),
                2,
            )


def _context(message: SegmentMessage, defaults: Mapping[str, Any] | None) -> SegmentContext:
    merged = {**defaults, **(message.context or {})} if defaults else message.context
    if not merged:
        return SegmentContext()
    try:
        return msgspec.convert(merged, SegmentContext)
    except msgspec.ValidationError as exc:
        raise MappingError(f"{exc}".replace("`$", "`$.context", 1)) from None


def _our_context(context: SegmentContext) -> dict[str, Any]:
    ours: dict[str, Any] = {}
    if context.user_agent:
        ours["user_agent"] = context.user_agent
    if context.locale:
        ours["locale"] = context.locale
    if context.app:
        app = {k: str(context.app[k]) for k in ("name", "version") if context.app.get(k)}
        if app:
            ours["app"] = app
    if context.device:
        device = {
            k: str(context.device[k]) for k in ("manufacturer", "model") if context.device.get(k)
        }
        kind = context.device.get("type")
        if isinstance(kind, str) and kind:
            device["type"] = DEVICE_TYPES.get(kind.lower(), "other")
        if device:
            ours["device"] = device
    if context.campaign:
        campaign = {
            k: context.campaign[k]
            for k in ("source", "medium", "name", "term", "content")
            if context.campaign.get(k) is not None
        }
        if campaign:
            ours["campaign"] = campaign
    return ours


def _page(context: SegmentContext, properties: dict[str, Any] | None) -> dict[str, Any]:
    """Page fields: a page call's own properties first, then `context.page`."""
    page: dict[str, Any] = {}
    for name in ("url", "referrer", "title"):
        value = properties.pop(name, None) if properties is not None else None
        if value is None and context.page is not None:
            value = getattr(context.page, name)
        if value is not None:
            page[name] = value
    return page


def to_event(
    message: SegmentMessage,
    kind: str,
    raw: bytes,
    source: str,
    received_at: datetime,
    batch: SegmentBatch | None = None,
) -> dict[str, Any]:
    """Our event (as a dict ready to encode) for one Segment message of type `kind`."""
    context = _context(message, batch.context if batch else None)
    properties = dict(message.properties or {})
    event: dict[str, Any] = {
        "event_id": event_id(source, message.message_id, raw),
        "occurred_at": occurred_at(message, batch.sent_at if batch else None, received_at),
    }
    anonymous_id, user_id = _id(message.anonymous_id), _id(message.user_id)
    page = _page(context, properties if kind in ("page", "screen") else None)

    if kind == "track":
        if not message.event:
            raise MappingError("`event` is required for `track`")
        standard = ECOMMERCE.get(snake_case(message.event))
        event["event_type"] = standard or custom_event_type(message.event)
        if standard in ("product_view", "add_to_cart", "remove_from_cart"):
            event["product"] = product_of(properties, "properties")
            for key in PRODUCT_KEYS:
                properties.pop(key, None)
        elif standard == "purchase":
            event["order"] = _order(properties, message.event)
        elif standard == "begin_checkout":
            _checkout(properties)
    elif kind in ("page", "screen"):
        event["event_type"] = "page_view"
        for name in ("name", "category"):
            value = getattr(message, name)
            if value is not None:
                properties.setdefault(name, value)
        if kind == "screen" and message.name and "title" not in page:
            page["title"] = message.name
    elif kind == "identify":
        event["event_type"] = "identify"
        properties = dict(message.traits or {})
    elif kind == "group":
        if _id(message.group_id) is None:
            raise MappingError("`groupId` is required for `group`")
        event["event_type"] = "group"
        properties = {"group_id": _id(message.group_id), **(message.traits or {})}
    elif kind == "alias":
        # The previous id is the one being merged: the processor treats it like the anonymous
        # id of an identify.
        previous_id = _id(message.previous_id)
        if previous_id is None or user_id is None:
            raise MappingError("`previousId` and `userId` are required for `alias`")
        event["event_type"] = "alias"
        anonymous_id = previous_id
        properties = {"previous_id": previous_id}
    else:
        raise MappingError(
            f"unknown message `type` {kind!r}: use track, page, screen, identify, group or alias"
        )

    if anonymous_id is None and user_id is None:
        raise MappingError("either `userId` or `anonymousId` is required")
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    if user_id is not None:
        event["user_id"] = user_id
    if page:
        event["page"] = page
    ours = _our_context(context)
    if ours:
        event["context"] = ours
    if properties:
        event["properties"] = flatten(properties)
    return event


# --- request bodies ------------------------------------------------------------------------


def check_message(
    checked: Checked,
    index: int,
    raw: bytes,
    kind: str | None,
    source: str,
    received_at: datetime,
    batch: SegmentBatch | None,
    max_message_bytes: int,
) -> None:
    """Map and validate one message; add it to `checked` as good (ours) or bad (its bytes)."""
    error: str | None
    if len(raw) > max_message_bytes:
        error = f"message is {len(raw)} bytes, over the {max_message_bytes}-byte limit"
    else:
        try:
            message = _message_decoder.decode(raw)
            mapped = to_event(message, kind or message.type or "", raw, source, received_at, batch)
        except msgspec.ValidationError as exc:
            error = f"invalid Segment message: {exc}"
        except msgspec.DecodeError as exc:
            error = f"invalid JSON: {exc}"
        except MappingError as exc:
            error = str(exc)
        else:
            event = _encode(mapped)
            error = event_error(event)
            if error is None:
                checked.good.append(event)
                return
            error = f"mapped event refused: {error}{_property_at_fault(mapped)}"
    checked.bad.append(raw)
    checked.rejected.append(Rejection(index, error))


_property_decoder = msgspec.json.Decoder(PropertyValue)


def _property_at_fault(event: Mapping[str, Any]) -> str:
    """msgspec says `$.properties[...]` for a bad value; name the Segment property instead."""
    for key, value in (event.get("properties") or {}).items():
        try:
            _property_decoder.decode(_encode(value))
        except msgspec.ValidationError:
            return f" (property `{key}`)"
    return ""


def check_single_message(body: bytes, source: str, kind: str, max_message_bytes: int) -> Checked:
    """Body of `/v1/track` and the like: one message (400 when not JSON, 413 over the limit)."""
    if len(body) > max_message_bytes:
        raise HTTPError(
            413, f"message is {len(body)} bytes, over the {max_message_bytes}-byte limit"
        )
    try:
        _json_check.decode(body)
    except msgspec.DecodeError as exc:
        raise HTTPError(400, f"body is not valid JSON: {exc}") from None
    checked = Checked()
    check_message(checked, 0, body, kind, source, datetime.now(UTC), None, max_message_bytes)
    return checked


def decode_batch(body: bytes) -> SegmentBatch | None:
    """Segment's batch body, or None when the body is not one (no `batch` array)."""
    try:
        batch = _batch_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    return batch if batch.batch is not None else None


def check_message_batch(
    batch: SegmentBatch,
    body_size: int,
    source: str,
    max_message_bytes: int,
    max_batch_bytes: int,
    max_messages: int,
) -> Checked:
    """A Segment batch (from `decode_batch`): each message accepted or rejected alone."""
    assert batch.batch is not None
    if body_size > max_batch_bytes:
        raise HTTPError(413, f"batch is {body_size} bytes, over the {max_batch_bytes}-byte limit")
    if len(batch.batch) > max_messages:
        raise HTTPError(
            413, f"batch has {len(batch.batch)} messages, over the {max_messages}-message limit"
        )
    checked = Checked()
    received_at = datetime.now(UTC)
    for index, raw in enumerate(batch.batch):
        check_message(
            checked, index, bytes(raw), None, source, received_at, batch, max_message_bytes
        )
    return checked


def routes(limits: GatewaySettings, ours: Check) -> dict[str, Check]:
    """Segment's routes; `ours` is our own `/v1/batch`, tried first on that shared path."""
    max_message = min(MAX_MESSAGE_BYTES, limits.max_event_bytes)
    max_batch = min(MAX_BATCH_BYTES, limits.max_request_bytes)

    def batch_only(body: bytes, source: str) -> tuple[Checked, Answer]:
        batch = decode_batch(body)
        if batch is None:
            raise HTTPError(400, 'body is not a Segment batch {"batch": [...]}')
        return segment_batch(batch, body, source)

    def segment_batch(batch: SegmentBatch, body: bytes, source: str) -> tuple[Checked, Answer]:
        checked = check_message_batch(
            batch, len(body), source, max_message, max_batch, limits.max_batch_events
        )
        return checked, send_success

    def ours_or_segment(body: bytes, source: str) -> tuple[Checked, Answer]:
        try:
            return ours(body, source)
        except HTTPError as exc:
            # Only a body our decoder refuses can be Segment's: ours pay nothing extra.
            if exc.status != 400:
                raise
            batch = decode_batch(body)
            if batch is None:
                raise
            return segment_batch(batch, body, source)

    def single(kind: str) -> Check:
        return lambda body, source: (
            check_single_message(body, source, kind, max_message),
            send_success,
        )

    found: dict[str, Check] = {
        path: single(kind) for path, kind in (SINGLE_TYPES | BROWSER_TYPES).items()
    }
    found["/v1/import"] = batch_only
    found[BROWSER_BATCH_PATH] = batch_only
    found["/v1/batch"] = ours_or_segment
    return found
