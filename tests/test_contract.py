"""The event contract: valid events round-trip; every constraint refuses what it should and the
error names the JSON path and the rule."""

from __future__ import annotations

import copy
import json
import re
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


# (field to break, its new value (... removes it), where the error points, the rule it names).
# `where` is a JSON path for a field's own constraints, the field's name for rules across fields.
CASES = [
    ("event_id", "not-a-uuid", "$.event_id", "Invalid UUID"),
    ("event_id", ..., "event_id", "missing required field"),
    ("event_type", "Page View", "$.event_type", "regex"),
    ("event_type", "a" * 65, "$.event_type", "regex"),
    ("occurred_at", "2026-01-02T03:04:05", "$.occurred_at", "timezone"),
    ("occurred_at", "yesterday", "$.occurred_at", "datetime"),
    ("occurred_at", "1999-12-31T00:00:00Z", "occurred_at", "after 2000-01-01"),
    ("occurred_at", "2999-01-01T00:00:00Z", "occurred_at", "24 hours in the future"),
    ("anonymous_id", "", "$.anonymous_id", "length >= 1"),
    ("anonymous_id", "x" * 129, "$.anonymous_id", "length <= 128"),
    ("anonymous_id", ..., "anonymous_id", "or `user_id` is required"),
    ("user_id", 42, "$.user_id", "Expected `str | null`"),
    ("order", ..., "order", "required for `purchase`"),
    ("order.currency", "eur", "$.order.currency", "regex"),
    ("order.items", [{"product_id": "p", "currency": "E"}], "$.order.items[0].currency", "regex"),
    ("product.currency", "E1R", "$.product.currency", "regex"),
    ("order.revenue", -1, "$.order.revenue", ">= 0"),
    (
        "order.items",
        [{"product_id": "p"}] * (MAX_ORDER_ITEMS + 1),
        "$.order.items",
        f"length <= {MAX_ORDER_ITEMS}",
    ),
    ("order.items", [{"price": 1}], "$.order.items[0]", "product_id"),
    ("product.price", 1e11, "$.product.price", "<= 10000000000"),
    ("product.quantity", 0, "$.product.quantity", ">= 1"),
    ("product.sku", "", "$.product.sku", "length >= 1"),
    ("page.url", "h" * 2049, "$.page.url", "length <= 2048"),
    ("page.title", "t" * 513, "$.page.title", "length <= 512"),
    ("context.locale", "english please", "$.context.locale", "regex"),
    ("context.locale", "en-US ", "$.context.locale", "regex"),
    # Python's `$` matches before a final newline; the contract must not.
    ("event_type", "page_view\n", "$.event_type", "regex"),
    ("order.currency", "EUR\n", "$.order.currency", "regex"),
    ("context.locale", "en\n", "$.context.locale", "regex"),
    ("context.device.type", "car", "$.context.device.type", "Invalid enum value"),
    ("context.campaign", {"source": "s" * 257}, "$.context.campaign.source", "length <= 256"),
    (
        "properties",
        {f"k{i}": i for i in range(MAX_PROPERTIES + 1)},
        "$.properties",
        f"length <= {MAX_PROPERTIES}",
    ),
    ("properties", {"nested": {"a": 1}}, "$.properties[...]", "Expected"),
    ("properties", {"long": "v" * 1025}, "$.properties[...]", "length <= 1024"),
    ("properties", {"": 1}, "$.properties", "length >= 1"),
    ("eventType", "page_view", "eventType", "unknown field"),
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
    assert f"`{where}`" in error


def test_product_events_need_a_product() -> None:
    value = assign(valid(), "order", ...)
    value["event_type"] = "add_to_cart"
    del value["product"]
    error = event_error(json.dumps(value).encode())
    assert error is not None and "`product` is required for `add_to_cart`" in error


def test_valid_example_is_valid() -> None:
    assert event_error(json.dumps(valid()).encode()) is None


# Only the cases of a field's own constraints: the rules across fields depend on the others.
@given(events(), st.sampled_from([c for c in CASES if c[2].startswith("$")]))
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
    batch = msgspec.json.decode(b'{"events":[' + b",".join(raws) + b"]}", type=Batch)
    assert [bytes(raw) for raw in batch.events] == raws  # each event's bytes, untouched


def test_json_schema_requires_what_the_decoder_requires() -> None:
    # A page view with both ids: no field is required by another one.
    event = {k: v for k, v in valid().items() if k not in ("product", "order")}
    event |= {"event_type": "page_view", "user_id": "u-1"}
    refused_without: set[str] = set()
    for field in event:
        error = event_error(json.dumps(assign(event, field, ...)).encode())
        if error is not None:
            assert f"`{field}`" in error
            refused_without.add(field)
    assert set(event_json_schema()["$defs"]["Event"]["required"]) == refused_without


def published_pattern(definition: str, field: str) -> str:
    """The `pattern` the JSON Schema gives `definition.field` (inside `anyOf` when optional)."""
    schema = event_json_schema()["$defs"][definition]["properties"][field]
    return next(s["pattern"] for s in schema.get("anyOf", [schema]) if "pattern" in s)


@pytest.mark.parametrize(
    ("definition", "field", "path", "accepted", "refused"),
    [
        (
            "Event",
            "event_type",
            "event_type",
            ["page_view", "checkout_step_2", "a" * 64],
            ["Page View", "2fa", "_x", "a" * 65, "", "page_view\n"],
        ),
        (
            "Order",
            "currency",
            "order.currency",
            ["EUR", "JPY"],
            ["eur", "EURO", "E1R", "", "EUR\n"],
        ),
        ("Product", "currency", "product.currency", ["EUR"], ["Eur", "EU", "€"]),
        (
            "Context",
            "locale",
            "context.locale",
            ["en", "en-US", "zh_Hant_TW", "gsw"],
            ["english please", "en-US ", "e", "en-", "en-x", "en\n"],
        ),
    ],
)
def test_json_schema_patterns_agree_with_the_decoder(
    definition: str, field: str, path: str, accepted: list[str], refused: list[str]
) -> None:
    # The whole value must match, as in JSON Schema's (ECMAScript's) reading of these anchored
    # patterns, where `$` does not match before a final newline.
    pattern = published_pattern(definition, field)
    for value in accepted:
        assert event_error(json.dumps(assign(valid(), path, value)).encode()) is None
        assert re.fullmatch(pattern, value) is not None
    for value in refused:
        error = event_error(json.dumps(assign(valid(), path, value)).encode())
        assert error is not None and f"`$.{path}`" in error and "regex" in error
        assert re.fullmatch(pattern, value) is None
