"""Segment messages mapped onto our contract, and the Segment routes' body handling (in-process).

The routes are taken from the gateway app itself (`create_app().ingest_routes`), so these tests
exercise the same dispatch as the server, including `/v1/batch` choosing by the body's shape.
What reaches Pub/Sub and PostgreSQL is covered with the real SDKs in test_segment_sdks.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from clickstream_contract.config import Settings
from clickstream_contract.event import Event
from gateway import segment
from gateway.app import answer_accepted, create_app
from gateway.openapi import openapi_document
from gateway.parsing import HTTPError
from gateway.settings import GatewaySettings
from gateway.types import Check

NOW = datetime.now(UTC).replace(microsecond=0)


def routes(**limits: Any) -> dict[str, Check]:
    settings = Settings(project="test", write_keys={"k": "web"})
    return create_app(settings, GatewaySettings(**limits)).ingest_routes


ROUTES = routes()


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def track(event: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "anonymousId": "anon-1",
        "messageId": f"m-{uuid.uuid4().hex}",
        "timestamp": NOW.isoformat(),
        "properties": properties,
    }


def accept(path: str, payload: Any, source: str = "web") -> tuple[list[Event], list[str]]:
    """The events a route publishes for `payload`, and its rejection errors."""
    checked, _ = ROUTES[path](body(payload), source)
    events = [msgspec.json.decode(raw, type=Event) for raw in checked.good]
    return events, [r.error for r in checked.rejected]


def one(payload: dict[str, Any], kind: str | None = None) -> Event:
    path = f"/v1/{kind or payload['type']}"
    events, errors = accept(path, payload)
    assert errors == []
    [event] = events
    return event


def rejected(payload: dict[str, Any]) -> str:
    events, errors = accept(f"/v1/{payload.get('type', 'track')}", payload)
    assert events == []
    [error] = errors
    return error


# --- e-commerce spec -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("Product Viewed", "product_view"),
        ("Product Added", "add_to_cart"),
        ("Product Removed", "remove_from_cart"),
        ("product_viewed", "product_view"),
    ],
)
def test_product_events_carry_the_product(name: str, event_type: str) -> None:
    event = one(
        track(
            name,
            product_id="p-1",
            sku="SKU-1",
            name="Mug",
            category="Kitchen",
            price="12.50",
            quantity=2,
            currency="eur",
            brand="Acme",
            url="https://shop.example.com/p-1",
        )
    )
    assert event.event_type == event_type
    assert event.product is not None
    assert msgspec.structs.asdict(event.product) == {
        "product_id": "p-1",
        "sku": "SKU-1",
        "name": "Mug",
        "category": "Kitchen",
        "price": 12.5,
        "currency": "EUR",
        "quantity": 2,
    }
    # What has no place in `product` stays in properties (a track's url is the product's).
    assert event.properties == {"brand": "Acme", "url": "https://shop.example.com/p-1"}
    assert event.page is None


def test_product_id_falls_back_to_id_then_sku_and_is_required() -> None:
    assert one(track("Product Viewed", id=42)).product.product_id == "42"  # type: ignore[union-attr]
    assert one(track("Product Added", sku="S-9")).product.product_id == "S-9"  # type: ignore[union-attr]
    error = rejected(track("Product Viewed", name="Mug"))
    assert "`properties.product_id` (or `id` or `sku`) is required" in error


def test_order_completed_becomes_a_purchase_with_items() -> None:
    event = one(
        track(
            "Order Completed",
            order_id="o-1",
            total=33.0,
            revenue=30.0,
            shipping=3.0,
            currency="usd",
            coupon="SPRING",
            products=[
                {"product_id": "p-1", "price": 10, "quantity": 2, "name": "Mug"},
                {"sku": "S-2", "price": 10.0, "category": "Tea"},
            ],
        )
    )
    assert event.event_type == "purchase"
    assert event.order is not None
    assert (event.order.order_id, event.order.revenue, event.order.currency) == ("o-1", 30.0, "USD")
    assert [(i.product_id, i.price, i.quantity, i.currency) for i in event.order.items] == [
        ("p-1", 10.0, 2, "USD"),
        ("S-2", 10.0, 1, "USD"),
    ]
    assert event.properties == {"total": 33.0, "shipping": 3.0, "coupon": "SPRING"}


def test_order_revenue_falls_back_to_total_then_the_products_and_currency_to_usd() -> None:
    by_total = one(track("Order Completed", order_id="o-2", total=12.0))
    assert by_total.order is not None and by_total.order.revenue == 12.0
    assert by_total.order.currency == "USD"
    by_items = one(
        track(
            "Order Completed", order_id="o-3", products=[{"id": "p", "price": 2.5, "quantity": 3}]
        )
    )
    assert by_items.order is not None and by_items.order.revenue == 7.5
    assert "`properties.order_id` is required" in rejected(track("Order Completed", revenue=1))
    assert "`properties.revenue` or `properties.total`" in rejected(
        track("Order Completed", order_id="o-4")
    )
    assert "`properties.products[0].product_id`" in rejected(
        track("Order Completed", order_id="o-5", products=[{"price": 1}])
    )


def test_checkout_started_and_products_searched() -> None:
    checkout = one(
        track(
            "Checkout Started",
            order_id="o-1",
            products=[{"product_id": "a", "price": 2, "quantity": 3}, {"product_id": "b"}],
        )
    )
    assert checkout.event_type == "begin_checkout"
    assert checkout.properties == {"order_id": "o-1", "item_count": 4, "value": 6.0}
    search = one(track("Products Searched", query="blue mug"))
    assert (search.event_type, search.properties) == ("search", {"query": "blue mug"})


# --- other tracks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("Newsletter Signed Up", "newsletter_signed_up"),
        ("videoPlaybackStarted", "video_playback_started"),
        ("  Coupon -- Applied! ", "coupon_applied"),
        ("404 Seen", "event_404_seen"),
        ("Purchase", "track_purchase"),  # not our purchase: it has no order
        ("Identify", "track_identify"),  # must never link identities
        ("x" * 100, "x" * 64),
    ],
)
def test_custom_tracks_get_a_snake_case_name_within_our_pattern(name: str, event_type: str) -> None:
    assert one(track(name)).event_type == event_type


def test_custom_track_properties_are_kept_and_nested_values_become_json() -> None:
    event = one(
        track(
            "Video Played", title="Intro", seconds=12, muted=False, tags=["a", "b"], meta={"x": 1}
        )
    )
    assert event.properties == {
        "title": "Intro",
        "seconds": 12,
        "muted": False,
        "tags": '["a","b"]',
        "meta": '{"x":1}',
    }
    assert "has no letters or digits" in rejected(track("!!!"))
    assert "`event` is required" in rejected({**track("x"), "event": ""})
    too_long = rejected(track("Note", text="y" * 2000))
    assert "mapped event refused" in too_long and "(property `text`)" in too_long


# --- page, screen, identify, group, alias ------------------------------------------------


def test_page_and_screen_become_page_views() -> None:
    page = one(
        {
            "type": "page",
            "name": "Home",
            "category": "Landing",
            "userId": "u-1",
            "properties": {"title": "Welcome", "path": "/", "search": "?q=1"},
            "context": {
                "page": {"url": "https://shop.example.com/?q=1", "referrer": "https://google.com/"},
                "userAgent": "Mozilla/5.0",
                "locale": "en-US",
                "campaign": {"name": "spring", "source": "news", "medium": "email"},
                "device": {"type": "ios", "model": "iPhone15,2"},
                "app": {"name": "Shop", "version": 3, "build": "33"},
                "ip": "198.51.100.7",
            },
        }
    )
    assert page.event_type == "page_view"
    assert page.page is not None
    assert (page.page.url, page.page.referrer, page.page.title) == (
        "https://shop.example.com/?q=1",
        "https://google.com/",
        "Welcome",
    )
    assert page.properties == {"path": "/", "search": "?q=1", "name": "Home", "category": "Landing"}
    context = msgspec.to_builtins(page.context)
    assert context == {
        "user_agent": "Mozilla/5.0",
        "locale": "en-US",
        "app": {"name": "Shop", "version": "3"},
        "device": {"type": "mobile", "model": "iPhone15,2"},
        "campaign": {"source": "news", "medium": "email", "name": "spring"},
    }
    screen = one({"type": "screen", "name": "Cart", "anonymousId": "a"}, "screen")
    assert screen.event_type == "page_view"
    assert screen.page is not None and screen.page.title == "Cart"


def test_a_path_names_the_type_and_tracks_take_page_fields_from_context_only() -> None:
    event = one(
        {
            "type": "page",  # ignored: the path says track
            "event": "Clicked",
            "anonymousId": "a",
            "properties": {"url": "https://cdn.example.com/banner"},
            "context": {"page": {"url": "https://shop.example.com/cart"}},
        },
        "track",
    )
    assert event.event_type == "clicked"
    assert event.page is not None and event.page.url == "https://shop.example.com/cart"
    assert event.properties == {"url": "https://cdn.example.com/banner"}


def test_identify_group_and_alias() -> None:
    identify = one(
        {
            "type": "identify",
            "userId": 1234,
            "anonymousId": "anon-9",
            "traits": {"email": "a@example.com", "plan": "pro", "address": {"city": "Oslo"}},
        }
    )
    assert (identify.event_type, identify.user_id, identify.anonymous_id) == (
        "identify",
        "1234",
        "anon-9",
    )
    assert identify.properties == {
        "email": "a@example.com",
        "plan": "pro",
        "address": '{"city":"Oslo"}',
    }
    group = one({"type": "group", "userId": "u", "groupId": "g-1", "traits": {"name": "Acme"}})
    assert (group.event_type, group.properties) == ("group", {"group_id": "g-1", "name": "Acme"})
    alias = one({"type": "alias", "userId": "u-2", "previousId": "anon-3"})
    assert (alias.event_type, alias.anonymous_id, alias.user_id) == ("alias", "anon-3", "u-2")
    assert "`previousId` and `userId` are required" in rejected({"type": "alias", "userId": "u"})
    assert "`groupId` is required" in rejected({"type": "group", "userId": "u"})
    assert "either `userId` or `anonymousId`" in rejected({"type": "track", "event": "x"})


# --- ids and time --------------------------------------------------------------------------


def test_message_ids_become_stable_uuids_per_source() -> None:
    message = track("Clicked")
    first, second = one(message), one(message)
    assert first.event_id == second.event_id
    [other_source], _ = accept("/v1/track", message, source="backend")
    assert other_source.event_id != first.event_id
    expected = uuid.uuid5(segment.NAMESPACE, f"web\x00id:{message['messageId']}")
    assert first.event_id == expected
    # Without a messageId the message's bytes decide: an identical retry still dedupes.
    del message["messageId"]
    assert one(message).event_id == one(message).event_id
    assert one(message).event_id != one({**message, "event": "Other"}).event_id


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The device clock is 2 hours behind: it stamped the event 5 s before sending it.
    device_now = NOW - timedelta(hours=2)
    message = {
        **track("Clicked"),
        "timestamp": (device_now - timedelta(seconds=5)).isoformat(),
        "sentAt": device_now.isoformat(),
    }
    event = one(message)
    assert abs(event.occurred_at - (datetime.now(UTC) - timedelta(seconds=5))) < timedelta(
        seconds=2
    )
    # Batch-level sentAt applies to every message that has none.
    events, _ = accept(
        "/v1/batch", {"batch": [{**message, "sentAt": None}], "sentAt": message["sentAt"]}
    )
    assert abs(events[0].occurred_at - event.occurred_at) < timedelta(seconds=2)
    # No sentAt: the timestamp as sent (historical imports); none at all: when received.
    old = "2024-05-01T12:00:00"  # no offset: UTC, as Segment reads it
    assert one({**track("Clicked"), "timestamp": old}).occurred_at == datetime(
        2024, 5, 1, 12, tzinfo=UTC
    )
    untimed = one({**track("Clicked"), "timestamp": None})
    assert abs(untimed.occurred_at - datetime.now(UTC)) < timedelta(seconds=2)
    assert "invalid Segment message" in rejected({**track("x"), "timestamp": "yesterday"})


# --- bodies, shapes and limits --------------------------------------------------------------


def test_batch_path_serves_both_shapes_and_answers_each_its_own_way() -> None:
    ours = {
        "events": [
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "page_view",
                "occurred_at": NOW.isoformat(),
                "anonymous_id": "a",
            }
        ]
    }
    checked, answer = ROUTES["/v1/batch"](body(ours), "web")
    assert (len(checked.good), answer) == (1, answer_accepted)
    checked, answer = ROUTES["/v1/batch"](body({"batch": [track("A"), {"type": "x"}]}), "web")
    assert (len(checked.good), answer) == (1, segment.send_success)
    assert [r.index for r in checked.rejected] == [1]
    assert checked.bad == [body({"type": "x"})]  # the original message, as sent
    # Neither shape: our own error, unchanged.
    with pytest.raises(HTTPError) as refused:
        ROUTES["/v1/batch"](body({"evnts": []}), "web")
    assert refused.value.status == 400 and '{"events": [...]}' in refused.value.message
    with pytest.raises(HTTPError) as not_segment:
        ROUTES["/v1/import"](body(ours), "web")
    assert not_segment.value.status == 400 and '{"batch": [...]}' in not_segment.value.message
    checked, answer = ROUTES["/v1/import"](body({"batch": [track("A")]}), "web")
    assert (len(checked.good), answer) == (1, segment.send_success)


def test_limits_are_segments_or_ours_whichever_is_stricter() -> None:
    big = track("Note", text="y" * 1000)
    request = body({"batch": [big] * 440})
    # Under our 512 KiB request limit, over Segment's 500 KB batch limit.
    assert 500 * 1024 < len(request) < 512 * 1024
    with pytest.raises(HTTPError) as over:
        ROUTES["/v1/batch"](request, "web")
    assert over.value.status == 413 and "over the 512000-byte limit" in over.value.message
    huge = track("Note", text="z" * (33 * 1024))
    with pytest.raises(HTTPError) as single:
        ROUTES["/v1/track"](body(huge), "web")
    assert single.value.status == 413
    checked, _ = ROUTES["/v1/batch"](body({"batch": [huge, track("ok")]}), "web")
    assert len(checked.good) == 1 and "over the 32768-byte limit" in checked.rejected[0].error
    strict = routes(max_event_bytes=1024, max_batch_events=2)
    checked, _ = strict["/v1/batch"](body({"batch": [big, track("ok")]}), "web")
    assert "over the 1024-byte limit" in checked.rejected[0].error
    with pytest.raises(HTTPError) as count:
        strict["/v1/batch"](body({"batch": [track("a")] * 3}), "web")
    assert count.value.status == 413 and "3 messages" in count.value.message
    with pytest.raises(HTTPError) as garbage:
        ROUTES["/v1/track"](b'{"type": "track", ', "web")
    assert garbage.value.status == 400


def test_batch_context_is_merged_under_each_message() -> None:
    events, _ = accept(
        "/v1/batch",
        {
            "batch": [
                {**track("A"), "context": {"locale": "de-DE"}},
                track("B"),
            ],
            "context": {"userAgent": "Server/1", "locale": "en-GB"},
        },
    )
    contexts = [msgspec.to_builtins(e.context) for e in events]
    assert contexts == [
        {"user_agent": "Server/1", "locale": "de-DE"},
        {"user_agent": "Server/1", "locale": "en-GB"},
    ]


def test_analytics_js_paths_take_the_type_from_their_letter() -> None:
    for letter, kind in [("t", "track"), ("p", "page"), ("s", "screen"), ("i", "identify")]:
        payload = {**track("Product Viewed", product_id="p-1"), "type": kind, "userId": "u-1"}
        assert one(payload, kind).event_type == one(payload, letter).event_type
    group = {"type": "group", "userId": "u-1", "groupId": "g-1", "writeKey": "k"}
    assert one(group, "g").event_type == "group"
    alias = {"type": "alias", "userId": "u-1", "previousId": "anon-1", "writeKey": "k"}
    assert one(alias, "a").anonymous_id == "anon-1"
    events, errors = accept("/v1/b", {"writeKey": "k", "batch": [track("A"), track("B")]})
    assert (len(events), errors) == (2, [])


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"writeKey": "abc", "type": "track"}', b"abc"),
        (b'{"type": "track"}', b""),
        (b'{"writeKey": 5}', b""),
        (b'[{"writeKey": "abc"}]', b""),
        (b"{oops", b""),
        (b'{"writeKey": "abc", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""),
    ],
    ids=["present", "absent", "not-a-string", "array", "not-json", "nested-too-deep"],
)
def test_the_write_key_is_read_from_the_body_or_not_at_all(body: bytes, key: bytes) -> None:
    assert segment.body_write_key(body) == key


def test_every_ingest_route_is_in_the_openapi_document() -> None:
    document = openapi_document(GatewaySettings())
    assert set(ROUTES) <= set(document["paths"])
    schemas = document["components"]["schemas"]
    for path in [*segment.SINGLE_TYPES, *segment.BROWSER_TYPES, "/v1/b", "/v1/import"]:
        operation = document["paths"][path]["post"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SuccessResponse"
        }
        # analytics.js's routes may carry no header key at all: the body has it.
        assert ({} in operation["security"]) == (path in segment.KEY_IN_BODY_PATHS)
    assert set(schemas["SuccessResponse"]["required"]) == {"success", "accepted", "rejected"}
    assert {"type", "messageId", "anonymousId", "userId", "event", "properties", "context",
            "timestamp", "sentAt"} <= set(schemas["SegmentMessage"]["properties"])  # fmt: skip
    assert "writeKey" in schemas["AnalyticsJsMessage"]["properties"]
    batch_body = document["paths"]["/v1/batch"]["post"]["requestBody"]["content"]
    assert batch_body["application/json"]["schema"]["anyOf"] == [
        {"$ref": "#/components/schemas/BatchBody"},
        {"$ref": "#/components/schemas/SegmentBatchBody"},
    ]
