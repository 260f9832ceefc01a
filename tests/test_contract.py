"""The event contract: valid events round-trip; every constraint refuses what it should and the
error names the JSON path and the rule."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickstream_contract.event import (
    MAX_ORDER_ITEMS,
    MAX_PROPERTIES,
    STANDARD_EVENT_TYPES,
    Batch,
    Event,
    event_json_schema,
)
from gateway.validation import check_batch, event_error

decoder = msgspec.json.Decoder(Event)

ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=128)
short = st.text(max_size=256)
money = st.floats(min_value=0, max_value=1e10, allow_nan=False)
currencies = st.from_regex(r"\A[A-Z]{3}\Z")
scalars = st.none() | st.booleans() | st.integers() | money | st.text(max_size=1024)
products = st.fixed_dictionaries(
    {"product_id": ids},
    optional={
        "sku": ids,
        "name": short,
        "category": short,
        "price": money,
        "currency": currencies,
        "quantity": st.integers(1, 10_000),
    },
)
orders = st.fixed_dictionaries(
    {"order_id": ids, "revenue": money, "currency": currencies},
    optional={"items": st.lists(products, max_size=5)},
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).filter(lambda moment: moment < datetime.now(UTC) + timedelta(hours=23))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event_type = draw(
        st.sampled_from(STANDARD_EVENT_TYPES) | st.from_regex(r"\A[a-z][a-z0-9_]{0,63}\Z")
    )
    value: dict[str, Any] = {
        "event_id": str(draw(st.uuids())),
        "event_type": event_type,
        "occurred_at": draw(moments).isoformat(),
    }
    who = draw(st.sampled_from(["anonymous_id", "user_id", "both"]))
    if who in ("anonymous_id", "both"):
        value["anonymous_id"] = draw(ids)
    if who in ("user_id", "both"):
        value["user_id"] = draw(ids)
    if event_type in ("product_view", "add_to_cart", "remove_from_cart") or draw(st.booleans()):
        value["product"] = draw(products)
    if event_type == "purchase" or draw(st.booleans()):
        value["order"] = draw(orders)
    if draw(st.booleans()):
        value["page"] = draw(
            st.fixed_dictionaries(
                {}, optional={"url": st.text(max_size=2048), "title": st.text(max_size=512)}
            )
        )
    if draw(st.booleans()):
        value["properties"] = draw(
            st.dictionaries(st.text(min_size=1, max_size=128), scalars, max_size=MAX_PROPERTIES)
        )
    return value


@given(events())
def test_valid_events_round_trip(value: dict[str, Any]) -> None:
    raw = json.dumps(value).encode()
    decoded = decoder.decode(raw)
    assert event_error(raw) is None
    again = decoder.decode(msgspec.json.encode(decoded))
    assert again == decoded
    assert str(decoded.event_id) == value["event_id"]


def valid() -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "purchase",
        "occurred_at": "2026-01-02T03:04:05Z",
        "anonymous_id": "a-1",
        "context": {"locale": "en-US", "device": {"type": "mobile"}},
        "page": {"url": "https://shop.example.com/"},
        "product": {"product_id": "p-1", "price": 1.5, "currency": "EUR", "quantity": 2},
        "order": {"order_id": "o-1", "revenue": 3.0, "currency": "EUR", "items": []},
        "properties": {"k": "v"},
    }


def assign(value: dict[str, Any], path: str, new: Any) -> dict[str, Any]:
    """A copy of `value` with the dotted `path` set to `new` (or removed when new is ...)."""
    value = copy.deepcopy(value)
    *parents, last = path.split(".")
    target = value
    for key in parents:
        target = target[key]
    if new is ...:
        del target[last]
    else:
        target[last] = new
    return value


CASES = [
    ("event_id", "not-a-uuid", "$.event_id", "Invalid UUID"),
    ("event_id", ..., "", "event_id"),
    ("event_type", "Page View", "$.event_type", "regex"),
    ("event_type", "a" * 65, "$.event_type", "regex"),
    ("occurred_at", "2026-01-02T03:04:05", "$.occurred_at", "timezone"),
    ("occurred_at", "yesterday", "$.occurred_at", "datetime"),
    ("occurred_at", "1999-12-31T00:00:00Z", "", "after 2000-01-01"),
    ("occurred_at", "2999-01-01T00:00:00Z", "", "24 hours in the future"),
    ("anonymous_id", "", "$.anonymous_id", "length >= 1"),
    ("anonymous_id", "x" * 129, "$.anonymous_id", "length <= 128"),
    ("anonymous_id", ..., "", "at least one of `anonymous_id` or `user_id`"),
    ("user_id", 42, "$.user_id", "Expected `str | null`"),
    ("order", ..., "", "`order` is required for `purchase`"),
    ("order.currency", "eur", "$.order.currency", "regex"),
    ("order.items", [{"product_id": "p", "currency": "E"}], "$.order.items[0].currency", "regex"),
    ("product.currency", "E1R", "$.product.currency", "regex"),
    ("order.revenue", -1, "$.order.revenue", ">= 0"),
    ("order.items", [{"product_id": "p"}] * (MAX_ORDER_ITEMS + 1), "$.order.items", "length"),
    ("order.items", [{"price": 1}], "$.order.items[0]", "product_id"),
    ("product.price", 1e11, "$.product.price", "<= 10000000000"),
    ("product.quantity", 0, "$.product.quantity", ">= 1"),
    ("product.sku", "", "$.product.sku", "length >= 1"),
    ("page.url", "h" * 2049, "$.page.url", "length <= 2048"),
    ("page.title", "t" * 513, "$.page.title", "length <= 512"),
    ("context.locale", "english please", "$.context.locale", "regex"),
    ("context.locale", "en-US ", "$.context.locale", "regex"),
    ("context.device.type", "car", "$.context.device.type", "Invalid enum value"),
    ("context.campaign", {"source": "s" * 257}, "$.context.campaign.source", "length <= 256"),
    ("properties", {f"k{i}": i for i in range(MAX_PROPERTIES + 1)}, "$.properties", "length"),
    ("properties", {"nested": {"a": 1}}, "$.properties[...]", "Expected"),
    ("properties", {"long": "v" * 1025}, "$.properties[...]", "length <= 1024"),
    ("properties", {"": 1}, "$.properties", "length >= 1"),
    ("eventType", "page_view", "", "unknown field `eventType`"),
    ("context.extra", 1, "$.context", "unknown field `extra`"),
]


@pytest.mark.parametrize(("path", "new", "where", "rule"), CASES)
def test_each_constraint_refuses_and_names_path_and_rule(
    path: str, new: Any, where: str, rule: str
) -> None:
    raw = json.dumps(assign(valid(), path, new)).encode()
    error = event_error(raw)
    assert error is not None
    assert rule in error
    if where:
        assert f"`{where}`" in error


def test_product_events_need_a_product() -> None:
    value = assign(valid(), "order", ...)
    value["event_type"] = "add_to_cart"
    del value["product"]
    error = event_error(json.dumps(value).encode())
    assert error is not None and "`product` is required for `add_to_cart`" in error


def test_valid_example_is_valid() -> None:
    assert event_error(json.dumps(valid()).encode()) is None


@given(events(), st.sampled_from([c for c in CASES if c[2]]))
def test_a_broken_field_is_named_whatever_else_the_event_holds(
    value: dict[str, Any], case: tuple[str, Any, str, str]
) -> None:
    path, new, where, rule = case
    base = {**valid(), **{k: v for k, v in value.items() if k not in ("product", "order")}}
    base["event_type"] = "purchase"
    error = event_error(json.dumps(assign(base, path, new)).encode())
    assert error is not None and f"`{where}`" in error and rule in error


@given(st.lists(events() | st.just({"event_type": 1}), max_size=10))
def test_batches_split_good_from_bad_by_index(values: list[dict[str, Any]]) -> None:
    raws = [json.dumps(v).encode() for v in values]
    checked = check_batch(b'{"events":[' + b",".join(raws) + b"]}", 32 * 1024, 500)
    bad_indexes = [i for i, v in enumerate(values) if v == {"event_type": 1}]
    assert [r.index for r in checked.rejected] == bad_indexes
    assert checked.bad == [raws[i] for i in bad_indexes]
    assert checked.good == [r for i, r in enumerate(raws) if i not in bad_indexes]
    assert msgspec.json.decode(b'{"events":[' + b",".join(raws) + b"]}", type=Batch)


def test_json_schema_carries_the_constraints() -> None:
    schema = event_json_schema()
    event = schema["$defs"]["Event"]
    assert set(event["required"]) == {"event_id", "event_type", "occurred_at"}
    assert event["properties"]["event_type"]["pattern"] == r"^[a-z][a-z0-9_]{0,63}$"
    currency = schema["$defs"]["Order"]["properties"]["currency"]
    assert currency["pattern"] == r"^[A-Z]{3}$"
