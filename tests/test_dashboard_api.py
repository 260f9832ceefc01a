"""The dashboard's JSON endpoints against numbers computed by hand from a small data set.

The data set is written into the processor's aggregate tables as the processor would (the
dashboard's rollups follow by trigger), around a fixed clock: NOW = 2026-05-01 12:30:30 UTC, so
`range=1h` is [11:31, 12:31), `24h` is [04-30 12:31, 05-01 12:31) and `7d` reads whole hours
from the hourly rollups plus the edge minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from dashboard_testing import PASSWORD, drop_database, migrated_database
from starlette.testclient import TestClient

from dashboard import queries
from dashboard.app import create_app
from dashboard.auth import hash_password
from dashboard.config import DashboardConfig

NOW = datetime(2026, 5, 1, 12, 30, 30, tzinfo=UTC)


def at(text: str) -> datetime:
    """`HH:MM` on May 1st, or `MM-DD HH:MM`."""
    if " " not in text:
        text = f"05-01 {text}"
    return datetime.strptime(f"2026-{text}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


METRICS = [  # minute, event type, events, revenue
    ("12:10", "page_view", 5, "0"),
    ("12:10", "purchase", 1, "100.00"),
    ("12:29", "page_view", 4, "0"),
    ("12:31", "page_view", 100, "0"),  # after the range's end: never counted
    ("11:00", "product_view", 7, "0"),
    ("11:45", "purchase", 1, "50.50"),
    ("04-30 08:00", "page_view", 10, "0"),
]
VISITOR_MINUTES = [
    ("12:10", "alice@example.com"),
    ("12:10", "bob@example.com"),
    ("12:29", "carol@example.com"),
    ("11:00", "anon-dave"),
    ("11:45", "alice@example.com"),
    ("04-30 08:00", "erin@example.com"),
]
# id, visitor, started, last seen, referrer, utm source, utm medium, device, browser, os
SESSIONS = [
    ("s1", "alice@example.com", "12:05", "12:29", "search", None, None,
     "desktop", "Chrome", "Windows"),
    ("s2", "bob@example.com", "12:08", "12:12", "direct", None, None,
     "mobile", "Mobile Safari", "iOS"),
    ("s3", "carol@example.com", "11:40", "12:27", "paid", "google", "cpc",
     "mobile", "Chrome Mobile", "Android"),
    ("s4", "anon-dave", "10:50", "11:05", "email", "newsletter", "email",
     "desktop", "Firefox", "Linux"),
]  # fmt: skip
FUNNEL = [
    ("s1", "product_view", "12:06"),
    ("s1", "add_to_cart", "12:07"),
    ("s1", "begin_checkout", "12:09"),
    ("s1", "purchase", "12:10"),
    ("s2", "product_view", "12:09"),
    ("s3", "product_view", "11:41"),
    ("s3", "add_to_cart", "11:42"),
    ("s3", "begin_checkout", "11:44"),
    ("s3", "purchase", "11:45"),
    ("s4", "product_view", "10:55"),
]
PRODUCTS = [  # hour, id, name, views, carts, units, revenue
    ("12:00", "P1", "Mug", 5, 1, 1, "100.00"),
    ("11:00", "P2", "Lamp", 8, 2, 1, "50.50"),
    ("11:00", "P1", "Mug", 1, 0, 0, "0"),
    ("04-30 08:00", "P3", "Cap", 20, 0, 0, "0"),
]


async def load(conn: asyncpg.Connection) -> None:
    await conn.executemany(
        "INSERT INTO metrics_minute (minute, event_type, events, revenue) VALUES ($1, $2, $3, $4)",
        [(at(m), t, n, Decimal(r)) for m, t, n, r in METRICS],
    )
    await conn.executemany(
        "INSERT INTO visitor_minutes VALUES ($1, $2)",
        [(at(m), v) for m, v in VISITOR_MINUTES],
    )
    await conn.execute(
        "INSERT INTO visitor_hours SELECT DISTINCT date_trunc('hour', minute, 'UTC'), visitor_key"
        " FROM visitor_minutes;"
        " INSERT INTO visitor_days SELECT DISTINCT (minute AT TIME ZONE 'UTC')::date, visitor_key"
        " FROM visitor_minutes"
    )
    await conn.executemany(
        "INSERT INTO sessions (session_id, visitor_key, user_id, started_at, last_seen_at,"
        " referrer_class, utm_source, utm_medium, device_type, browser, os)"
        " VALUES ($1, $2, nullif($2, 'anon-dave'), $3, $4, $5, $6, $7, $8, $9, $10)",
        [(s, v, at(a), at(b), *rest) for s, v, a, b, *rest in SESSIONS],
    )
    await conn.execute(
        "INSERT INTO traffic_hour SELECT date_trunc('hour', started_at, 'UTC'), referrer_class,"
        " coalesce(utm_source, ''), coalesce(utm_medium, ''), count(*) FROM sessions"
        " GROUP BY 1, 2, 3, 4;"
        " INSERT INTO devices_hour SELECT date_trunc('hour', started_at, 'UTC'), device_type,"
        " browser, os, count(*) FROM sessions GROUP BY 1, 2, 3, 4"
    )
    await conn.executemany(
        "INSERT INTO funnel_steps VALUES ($1, $2, $3)", [(s, t, at(m)) for s, t, m in FUNNEL]
    )
    await conn.executemany(
        "INSERT INTO product_metrics_hour (hour, product_id, product_name, views, carts, units,"
        " revenue) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(at(h), p, name, v, c, u, Decimal(r)) for h, p, name, v, c, u, r in PRODUCTS],
    )
    await conn.executemany(
        "INSERT INTO bad_events (received_at, source, reason, reason_class, raw)"
        " VALUES ($1, 'web', $2, $3, $4)",
        [
            (at("12:20"), "$.event_type: bad", "validation", b'{"event_type":"<script>x"}'),
            (at("12:25"), "envelope: not msgpack", "envelope", b"\xff\xfe"),
            (at("04-30 09:00"), "$.occurred_at: bad", "validation", b"{}"),
        ],
    )
    await conn.execute(
        "INSERT INTO customers (visitor_key, user_id, first_seen_at, last_seen_at, events,"
        " sessions, orders, lifetime_value) VALUES"
        " ('alice@example.com', 'alice@example.com', '2026-04-01', '2026-05-01 12:29Z', 9, 3, 2,"
        " 150.50),"
        " ('anon-dave', NULL, '2026-05-01 10:50Z', '2026-05-01 11:05Z', 2, 1, 0, 0),"
        " ('bob@example.com', 'bob@example.com', '2026-05-01 12:08Z', '2026-05-01 12:12Z', 1, 1,"
        " 0, 0)"
    )
    await conn.executemany(  # one activity row (a batch) per event, as the timeline reads it
        "INSERT INTO visitor_activity (visitor_key, received_at, last_at, minutes, events)"
        " VALUES ('alice@example.com', $2, $2, ARRAY[date_trunc('minute', $2::timestamptz)],"
        " json_build_array(json_build_object('event_id', gen_random_uuid(),"
        " 'event_type', $1::text, 'occurred_at', $2::timestamptz, 'session_id', 's1',"
        " 'page_path', $3::text, 'product_id', $4::text, 'order_id', $5::text,"
        " 'revenue', $6::numeric)))",
        [
            ("page_view", at("12:05"), "/", None, None, None),
            ("product_view", at("12:06"), "/product/P1", "P1", None, None),
            ("purchase", at("12:10"), "/checkout/complete", "P1", "o-1", Decimal("100.00")),
        ],
    )


@pytest.fixture
async def seeded_url(database_url: str) -> AsyncIterator[str]:
    url = await migrated_database(database_url)
    conn = await asyncpg.connect(url)
    try:
        await load(conn)
    finally:
        await conn.close()
    yield url
    await drop_database(database_url, url)


PASSWORD_HASH = hash_password(PASSWORD)


def password_config(database_url: str) -> DashboardConfig:
    return DashboardConfig(
        database_url=database_url, auth="password", secret=b"s" * 32, password_hash=PASSWORD_HASH
    )


@pytest.fixture
def client(seeded_url: str) -> Iterator[TestClient]:
    app = create_app(password_config(seeded_url), clock=lambda: NOW)
    with TestClient(app, base_url="http://dash.test") as test_client:
        response = test_client.post(
            "/login",
            data={"password": PASSWORD, "next": "/"},
            headers={"origin": "http://dash.test"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        yield test_client


def get(client: TestClient, path: str) -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    data: dict[str, Any] = response.json()
    return data


def kpi_values(data: dict[str, Any]) -> dict[str, Any]:
    return {name: kpi["value"] for name, kpi in data["kpis"].items()}


def test_kpis_last_hour(client: TestClient) -> None:
    data = get(client, "/api/kpis?range=1h")
    assert data["range"] == {
        "name": "1h",
        "from": "2026-05-01T11:31:00+00:00",
        "to": "2026-05-01T12:31:00+00:00",
        "until": "2026-05-01T12:30:30+00:00",  # read at NOW: the last minute is still filling
        "bucket_seconds": 60,
    }
    assert data["has_data"] is True
    assert data["kpis"]["unique_visitors"]["approximate"] is False
    assert kpi_values(data) == {
        "events": 5 + 1 + 4 + 1,
        "unique_visitors": 3,  # alice, bob, carol
        "sessions": 3,  # s1, s2, s3 started in the range
        "orders": 2,
        "revenue": 150.5,
        "conversion_rate": pytest.approx(2 / 3),  # s1 and s3 purchased
        "average_order_value": 75.25,
    }
    # previous hour [10:31, 11:31): 7 product views by dave, session s4, no orders
    assert data["kpis"]["events"]["previous"] == 7
    assert data["kpis"]["events"]["change"] == pytest.approx((11 - 7) / 7)
    assert data["kpis"]["sessions"]["previous"] == 1
    assert data["kpis"]["orders"]["change"] is None  # nothing to compare with
    # last seen at or after 12:25:30 (5 min) / 12:00:30 (30 min)
    assert data["active_sessions"] == {"last_5m": 2, "last_30m": 3}


def sampled_estimate(client: TestClient, url: str, visitors: list[str]) -> int:
    """What the 1/16 hash sample makes of these distinct visitors (migration 101)."""

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM unnest($1::text[]) k WHERE (hashtext(k) & 15) = 0",
                    visitors,
                )
            )
        finally:
            await conn.close()

    return 16 * client.portal.call(count)  # type: ignore[union-attr]


def test_kpis_over_rollups_and_edges(client: TestClient, seeded_url: str) -> None:
    day = get(client, "/api/kpis?range=24h")
    assert kpi_values(day)["events"] == 11 + 7
    assert kpi_values(day)["sessions"] == 4
    # Few visitors: counted exactly even over long ranges.
    assert day["kpis"]["unique_visitors"]["approximate"] is False
    assert kpi_values(day)["unique_visitors"] == 4
    week = get(client, "/api/kpis?range=7d")
    assert kpi_values(week)["events"] == 11 + 7 + 10
    assert kpi_values(week)["unique_visitors"] == 5  # erin only in visitor_days
    custom = get(client, "/api/kpis?range=custom&from=2026-05-01T11:00&to=2026-05-01T12:00")
    assert kpi_values(custom)["events"] == 7 + 1
    assert kpi_values(custom)["orders"] == 1


def test_many_visitors_over_long_ranges_are_estimated_from_a_sample(
    client: TestClient, seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over 12 hours, many distinct visitors are estimated from a hash sample of their keys.
    monkeypatch.setattr(queries, "EXACT_VISITORS_BELOW", 0)
    day = get(client, "/api/kpis?range=24h")
    four = ["alice@example.com", "bob@example.com", "carol@example.com", "anon-dave"]
    assert day["kpis"]["unique_visitors"]["approximate"] is True
    assert kpi_values(day)["unique_visitors"] == sampled_estimate(client, seeded_url, four)
    week = get(client, "/api/kpis?range=7d")
    five = [*four, "erin@example.com"]
    assert kpi_values(week)["unique_visitors"] == sampled_estimate(client, seeded_url, five)


def test_rollups_follow_processor_upserts(client: TestClient, seeded_url: str) -> None:
    """The processor adds to metrics_minute rows in place; hourly reads must see it."""

    async def bump() -> None:
        conn = await asyncpg.connect(seeded_url)
        try:
            await conn.execute(
                "UPDATE metrics_minute SET events = events + 5 WHERE minute = $1", at("11:00")
            )
            await conn.execute("DELETE FROM metrics_minute WHERE minute = $1", at("11:45"))
        finally:
            await conn.close()

    client.portal.call(bump)  # type: ignore[union-attr]
    week = kpi_values(get(client, "/api/kpis?range=7d"))
    assert week["events"] == 28 + 5 - 1
    assert week["revenue"] == 100.0


def test_timeseries(client: TestClient) -> None:
    data = get(client, "/api/timeseries?range=1h")
    assert len(data["buckets"]) == 60
    assert data["buckets"][0] == "2026-05-01T11:31:00+00:00"
    i = data["buckets"].index("2026-05-01T12:10:00+00:00")
    assert data["events"]["page_view"][i] == 5
    assert data["events"]["purchase"][i] == 1
    assert data["revenue"][i] == 100.0
    assert sum(data["events"]["page_view"]) == 9
    assert "product_view" not in data["events"]  # 11:00 is before the range
    day = get(client, "/api/timeseries?range=24h")
    assert day["range"]["bucket_seconds"] == 900
    i = day["buckets"].index("2026-05-01T11:45:00+00:00")
    assert day["revenue"][i] == 50.5
    week = get(client, "/api/timeseries?range=7d")
    assert week["range"]["bucket_seconds"] == 3600
    i = week["buckets"].index("2026-04-30T08:00:00+00:00")
    assert week["events"]["page_view"][i] == 10
    assert sum(week["revenue"]) == 150.5


def test_funnel(client: TestClient) -> None:
    data = get(client, "/api/funnel?range=1h")
    assert [(s["step"], s["sessions"]) for s in data["steps"]] == [
        ("product_view", 3),
        ("add_to_cart", 2),
        ("begin_checkout", 2),
        ("purchase", 2),
    ]
    assert data["steps"][1]["drop_off"] == pytest.approx(1 / 3)
    assert data["steps"][0]["drop_off"] is None
    assert data["overall_rate"] == pytest.approx(2 / 3)
    day = get(client, "/api/funnel?range=24h")  # whole hours from funnel_hour (trigger)
    assert [s["sessions"] for s in day["steps"]] == [4, 2, 2, 2]


def test_products(client: TestClient) -> None:
    data = get(client, "/api/products?range=1h")  # hours 11:00 and 12:00
    assert data["hours"] == {"from": "2026-05-01T11:00:00+00:00", "to": "2026-05-01T13:00:00+00:00"}
    top = data["top"]
    assert [(p["product_id"], p["views"]) for p in top["views"]] == [("P2", 8), ("P1", 6)]
    assert [(p["product_id"], p["carts"]) for p in top["carts"]] == [("P2", 2), ("P1", 1)]
    assert [(p["product_id"], p["revenue"]) for p in top["revenue"]] == [
        ("P1", 100.0),
        ("P2", 50.5),
    ]
    week = get(client, "/api/products?range=7d")  # whole days from product_metrics_day
    assert week["top"]["views"][0] == {
        "product_id": "P3",
        "product_name": "Cap",
        "category": None,
        "views": 20,
        "carts": 0,
        "units": 0,
        "revenue": 0.0,
    }


def test_traffic_and_devices(client: TestClient) -> None:
    traffic = get(client, "/api/traffic?range=1h")  # leftover minutes: from sessions
    assert traffic["sessions"] == 3
    assert {r["name"]: r["sessions"] for r in traffic["referrer_classes"]} == {
        "search": 1,
        "direct": 1,
        "paid": 1,
    }
    assert {
        "referrer_class": "paid",
        "utm_source": "google",
        "utm_medium": "cpc",
        "sessions": 1,
    } in (traffic["sources"])
    day = get(client, "/api/traffic?range=24h")  # + traffic_hour for whole hours
    assert {r["name"]: r["sessions"] for r in day["referrer_classes"]}["email"] == 1
    devices = get(client, "/api/devices?range=24h")
    assert devices["device_types"] == [
        {"name": "desktop", "sessions": 2},
        {"name": "mobile", "sessions": 2},
    ]
    assert {b["name"] for b in devices["browsers"]} == {
        "Chrome",
        "Mobile Safari",
        "Chrome Mobile",
        "Firefox",
    }
    assert {"name": "iOS", "sessions": 1} in devices["operating_systems"]


def test_bad_events(client: TestClient) -> None:
    data = get(client, "/api/bad-events?range=1h")
    assert data["total"] == 2
    i = data["buckets"].index("2026-05-01T12:20:00+00:00")
    assert data["counts"]["validation"][i] == 1
    newest, older = data["samples"]
    assert (newest["reason_class"], newest["raw"]) == ("envelope", "\\xff\\xfe")
    assert older["raw"] == '{"event_type":"<script>x"}'  # JSON-escaped by the encoder, shown
    assert older["raw_bytes"] == 26  # as text by the page (textContent)
    only = get(client, "/api/bad-events?range=7d&reason=validation")
    assert only["total"] == 3  # counts cover every reason; samples follow the filter
    assert [s["reason_class"] for s in only["samples"]] == ["validation", "validation"]


def keys(data: dict[str, Any]) -> list[str]:
    return [c["visitor_key"] for c in data["customers"]]


def test_customer_search_is_an_id_lookup_over_all_time(client: TestClient) -> None:
    found = get(client, "/api/customers?q=a&range=15m")  # nobody was seen in the last 15m
    assert keys(found) == ["alice@example.com", "anon-dave"]
    assert (found["query"], found["total"]) == ("a", 2)
    assert found["customers"][1]["known"] is False
    assert keys(get(client, "/api/customers?q=al")) == ["alice@example.com"]
    assert keys(get(client, "/api/customers?q=a&sort=lifetime_value")) == [
        "alice@example.com",
        "anon-dave",
    ]
    assert get(client, "/api/customers?q=zed")["customers"] == []


def test_customers_last_seen_in_the_range_in_each_order(client: TestClient) -> None:
    day = get(client, "/api/customers")  # range=24h, newest first
    assert keys(day) == ["alice@example.com", "bob@example.com", "anon-dave"]
    assert (day["total"], day["next"], day["previous"]) == (3, None, None)
    hour = get(client, "/api/customers?range=1h")  # [11:31, 12:31): dave left at 11:05
    assert (keys(hour), hour["total"]) == (["alice@example.com", "bob@example.com"], 2)
    # Ties (no orders, no value) follow the visitor key, in the same direction.
    assert keys(get(client, "/api/customers?sort=lifetime_value")) == [
        "alice@example.com",
        "bob@example.com",
        "anon-dave",
    ]
    past = get(client, "/api/customers?range=custom&from=2026-05-01T11:00&to=2026-05-01T12:00")
    assert keys(past) == ["anon-dave"]
    # The list narrows by the UTC hour of last_seen_at (migration 204): a range that starts
    # after that hour began still finds the customer.
    within = get(client, "/api/customers?range=custom&from=2026-05-01T11:02&to=2026-05-01T11:06")
    assert keys(within) == ["anon-dave"]


def test_customers_page_through_all_and_back(client: TestClient) -> None:
    seen, cursor, page = [], None, {}
    while True:
        page = get(
            client, "/api/customers?sort=orders&limit=1" + (f"&after={cursor}" if cursor else "")
        )
        seen += keys(page)
        assert page["total"] == 3
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ["alice@example.com", "bob@example.com", "anon-dave"]
    back = []
    while page["previous"] is not None:
        page = get(client, f"/api/customers?sort=orders&limit=1&before={page['previous']}")
        back += keys(page)
    assert back == ["bob@example.com", "alice@example.com"]
    two = get(client, "/api/customers?sort=orders&limit=2")
    rest = get(client, f"/api/customers?sort=orders&limit=2&after={two['next']}")
    assert (keys(rest), rest["next"]) == (["anon-dave"], None)
    before = get(client, f"/api/customers?sort=orders&limit=2&before={rest['previous']}")
    assert (keys(before), before["previous"]) == (keys(two), None)


def test_customer_list_parameters_are_checked(client: TestClient) -> None:
    cursor = get(client, "/api/customers?limit=1")["next"]
    for query, field in [
        ("sort=name", "sort:"),
        ("limit=0", "limit:"),
        ("limit=lots", "limit:"),
        ("after=not-a-cursor", "after:"),
        (f"sort=orders&after={cursor}", "after:"),  # a cursor of another order
        (f"after={cursor}&before={cursor}", "after/before:"),
        ("range=2w", "range:"),
    ]:
        response = client.get(f"/api/customers?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"].startswith(field), query
    assert client.get("/customers?sort=name").status_code == 400


def test_customer_profile(client: TestClient) -> None:
    profile = get(client, "/api/customers/alice@example.com")
    assert profile["customer"]["orders"] == 2
    assert profile["customer"]["lifetime_value"] == 150.5
    assert [e["event_type"] for e in profile["timeline"]] == [
        "purchase",
        "product_view",
        "page_view",
    ]
    assert profile["timeline"][0]["revenue"] == 100.0
    assert client.get("/api/customers/nobody").status_code == 404
    page = client.get("/customers/alice@example.com?range=7d&sort=orders")
    assert page.status_code == 200
    assert "150.50 EUR" in page.text
    assert "/checkout/complete" in page.text
    assert 'href="/customers?range=7d&amp;sort=orders" id="back-to-list"' in page.text


def test_bad_range_is_a_clear_400(client: TestClient) -> None:
    response = client.get("/api/kpis?range=2w")
    assert response.status_code == 400
    assert response.json()["error"].startswith("range:")
    response = client.get("/api/funnel?range=custom&from=yesterday&to=2026-05-01T10:00")
    assert response.status_code == 400
    assert response.json()["error"].startswith("from:")
    assert client.get("/?range=2w").status_code == 400


def test_pages_render(client: TestClient) -> None:
    for path in ("/", "/bad-events", "/customers", "/customers?q=a"):
        response = client.get(path + ("&" if "?" in path else "?") + "range=7d")
        assert response.status_code == 200, path
        assert 'src="/static/app.js"' in response.text
    assert 'value="7d" selected' in client.get("/?range=7d").text
    assert "clickstream loadgen" in client.get("/").text  # the (hidden until empty) hint


@pytest.fixture
async def empty_url(database_url: str) -> AsyncIterator[str]:
    url = await migrated_database(database_url)
    yield url
    await drop_database(database_url, url)


def test_empty_database_says_so(empty_url: str) -> None:
    config = DashboardConfig(database_url=empty_url, auth="none", secret=b"s" * 32)
    with TestClient(create_app(config, clock=lambda: NOW)) as client:
        data = get(client, "/api/kpis?range=30d")
        assert data["has_data"] is False
        assert kpi_values(data) == {
            "events": 0,
            "unique_visitors": 0,
            "sessions": 0,
            "orders": 0,
            "revenue": 0.0,
            "conversion_rate": None,
            "average_order_value": None,
        }
        assert get(client, "/api/timeseries?range=1h")["events"] == {}
        assert [s["sessions"] for s in get(client, "/api/funnel")["steps"]] == [0, 0, 0, 0]
        assert get(client, "/api/products")["top"] == {"views": [], "carts": [], "revenue": []}
        assert get(client, "/api/bad-events")["samples"] == []
