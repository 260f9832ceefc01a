"""The dashboard's handlers called one by one, as plain functions of a request.

Each test builds the app with `create_app`, opens its database pool with the app's own
`lifespan` on a real, migrated PostgreSQL, and calls a handler with a hand-made ASGI scope:
no server, no routing, no middleware (so `request.state.user` is set here, as RequireIdentity
would).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from dashboard_testing import PASSWORD, drop_database, migrated_database
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from dashboard.app import (
    MAX_FORM_BYTES,
    AppState,
    api_bad_events,
    api_customer,
    api_funnel,
    api_kpis,
    create_app,
    customer_page,
    customers_page,
    lifespan,
    login,
    login_form,
    overview,
    pool,
)
from dashboard.auth import hash_password, read_session
from dashboard.config import DashboardConfig
from dashboard.security import SESSION_COOKIE

NOW = datetime(2026, 5, 1, 12, 30, 30, tzinfo=UTC)  # range=1h is [11:31, 12:31)
SECRET = b"s" * 32
PASSWORD_HASH = hash_password(PASSWORD)


def password_config(database_url: str | None) -> DashboardConfig:
    return DashboardConfig(
        database_url=database_url, auth="password", secret=SECRET, password_hash=PASSWORD_HASH
    )


def make_request(
    app: Starlette,
    path: str = "/",
    query: str = "",
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    path_params: dict[str, str] | None = None,
    body: bytes = b"",
    scheme: str = "http",
    user: str | None = "tester",
) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "scheme": scheme,
        "server": ("dash.test", 443 if scheme == "https" else 80),
        "path": path,
        "query_string": query.encode(),
        "headers": [(b"host", b"dash.test")]
        + [(name.encode(), value.encode()) for name, value in headers],
        "app": app,
        "path_params": path_params or {},
        "state": {"user": user},
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def state(app: Starlette) -> AppState:
    dashboard: AppState = app.state.dashboard
    return dashboard


def answer(response: Response) -> Any:
    return json.loads(bytes(response.body))


async def seed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO metrics_minute (minute, event_type, events, revenue)"
            " VALUES ('2026-05-01 12:10Z', 'page_view', 5, 0),"
            " ('2026-05-01 11:00Z', 'page_view', 7, 0)"  # before range=1h
        )
        await conn.execute(
            "INSERT INTO bad_events (received_at, source, reason, reason_class, raw) VALUES"
            " ('2026-05-01 12:20Z', 'web', '$.event_type: bad', 'validation', '{}'),"
            " ('2026-05-01 12:21Z', 'web', '$.page: bad', 'validation', '{}'),"
            " ('2026-05-01 12:25Z', 'web', 'envelope: not msgpack', 'envelope', '\\xff')"
        )
        await conn.execute(
            "INSERT INTO customers (visitor_key, user_id, first_seen_at, last_seen_at, orders,"
            " lifetime_value) VALUES ('alice@example.com', 'alice@example.com',"
            " '2026-04-01Z', '2026-05-01 12:29Z', 2, 150.50)"
        )
    finally:
        await conn.close()


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Starlette]:
    """The app over a seeded database, its pool open (lifespan entered), its clock at NOW."""
    url = await migrated_database(database_url)
    try:
        await seed(url)
        app = create_app(password_config(url), clock=lambda: NOW)
        async with lifespan(app):
            yield app
    finally:
        await drop_database(database_url, url)


async def test_lifespan_opens_the_pool_on_the_app_state_and_closes_it(database_url: str) -> None:
    url = await migrated_database(database_url)
    try:
        app = create_app(password_config(url))
        with pytest.raises(RuntimeError, match="lifespan"):
            pool(make_request(app))
        async with lifespan(app):
            db = pool(make_request(app))
            assert await db.fetchval("SELECT count(*) FROM metrics_minute") == 0
        assert db.is_closing()
        with pytest.raises(RuntimeError, match="lifespan"):
            pool(make_request(app))
    finally:
        await drop_database(database_url, url)


async def test_range_endpoint_reads_the_clock_from_the_app_state(app: Starlette) -> None:
    response = await api_kpis(make_request(app, "/api/kpis", "range=1h"))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    data = answer(response)
    assert data["range"]["to"] == "2026-05-01T12:31:00+00:00"
    assert data["kpis"]["events"]["value"] == 5
    assert data["kpis"]["events"]["previous"] == 7
    # The handler holds no clock of its own: a day later, the last hour is empty.
    state(app).clock = lambda: NOW + timedelta(days=1)
    later = answer(await api_kpis(make_request(app, "/api/kpis", "range=1h")))
    assert later["range"]["to"] == "2026-05-02T12:31:00+00:00"
    assert later["kpis"]["events"]["value"] == 0


async def test_range_endpoint_answers_a_bad_range_with_400(app: Starlette) -> None:
    response = await api_funnel(make_request(app, "/api/funnel", "range=2w"))
    assert response.status_code == 400
    assert answer(response)["error"].startswith("range:")


async def test_bad_events_reason_filters_the_samples_not_the_counts(app: Starlette) -> None:
    query = "range=1h&reason=validation"
    data = answer(await api_bad_events(make_request(app, "/api/bad-events", query)))
    assert data["total"] == 3
    assert [s["reason"] for s in data["samples"]] == ["$.page: bad", "$.event_type: bad"]
    unfiltered = answer(await api_bad_events(make_request(app, "/api/bad-events", "range=1h")))
    assert [s["reason_class"] for s in unfiltered["samples"]] == [
        "envelope",
        "validation",
        "validation",
    ]


async def test_customer_endpoint_and_page(app: Starlette) -> None:
    alice = {"key": "alice@example.com"}
    found = await api_customer(make_request(app, "/api/customers/x", path_params=alice))
    assert answer(found)["customer"]["lifetime_value"] == 150.5
    nobody = {"key": "nobody"}
    missing = await api_customer(make_request(app, "/api/customers/x", path_params=nobody))
    assert missing.status_code == 404
    assert answer(missing) == {"error": "no such customer"}
    page = await customer_page(make_request(app, "/customers/x", path_params=alice))
    assert page.status_code == 200
    assert "150.50 EUR" in bytes(page.body).decode()
    # Unknown customers get the page, with 404 (even when the range is bad).
    page = await customer_page(make_request(app, "/customers/x", "range=2w", path_params=nobody))
    assert page.status_code == 404
    assert "nobody" in bytes(page.body).decode()


async def test_customer_links_carry_the_list_there_and_back(app: Starlette) -> None:
    query = "range=7d&sort=orders&limit=1&other=x"
    listed = await customers_page(make_request(app, "/customers", query))
    context = listed.context  # type: ignore[attr-defined]
    assert context["list_query"] == "range=7d&sort=orders&limit=1"  # the list's own parameters
    html = bytes(listed.body).decode()
    assert 'href="/customers/alice%40example.com?range=7d&amp;sort=orders&amp;limit=1"' in html
    # A new order starts at the first page, in the same range.
    assert (
        context["sort_urls"]["lifetime_value"] == "/customers?range=7d&sort=lifetime_value&limit=1"
    )
    alice = {"key": "alice@example.com"}
    shown = await customer_page(
        make_request(app, "/customers/x", f"{query}&after=c", path_params=alice)
    )
    back = shown.context["back_url"]  # type: ignore[attr-defined]
    assert back == "/customers?range=7d&sort=orders&after=c&limit=1"
    refused = await customers_page(make_request(app, "/customers", "sort=name"))
    assert refused.status_code == 400
    assert "sort: &#39;name&#39; is not one of" in bytes(refused.body).decode()


async def test_page_with_a_bad_range_still_renders_with_400(app: Starlette) -> None:
    response = await overview(make_request(app, "/", "range=2w&from=x&other=y"))
    assert response.status_code == 400
    context = response.context  # type: ignore[attr-defined]
    assert context["time_range"] is None
    assert context["range_error"].startswith("range:")
    assert context["range_query"] == "range=2w&from=x"  # only the range's own parameters
    assert context["user"] == "tester"


def origin_post(
    app: Starlette, body: bytes, origin: str = "http://dash.test", scheme: str = "http"
) -> Request:
    headers = [("origin", origin), ("content-type", "application/x-www-form-urlencoded")]
    return make_request(
        app, "/login", method="POST", headers=headers, body=body, scheme=scheme, user=None
    )


async def test_login_checks_origin_size_and_password_then_sets_the_session() -> None:
    app = create_app(password_config(None))  # login needs no database
    wrong = await login(origin_post(app, b"password=nope&next=/customers"))
    assert wrong.status_code == 401
    assert "Wrong password." in bytes(wrong.body).decode()
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    form = f"password={PASSWORD.replace(' ', '+')}&next=/customers".encode()
    cross_site = await login(origin_post(app, form, origin="https://evil.test"))
    assert cross_site.status_code == 403
    too_large = form + b"&pad=" + b"x" * MAX_FORM_BYTES
    assert (await login(origin_post(app, too_large))).status_code == 413
    ok = await login(origin_post(app, form, scheme="https"))
    assert ok.status_code == 303
    assert ok.headers["location"] == "/customers"
    cookie = ok.headers["set-cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    token = cookie.split(";")[0].removeprefix(f"{SESSION_COOKIE}=")
    assert read_session(token, SECRET) == "admin"
    assert "Secure" not in (await login(origin_post(app, form))).headers["set-cookie"]


async def test_login_is_only_for_password_auth() -> None:
    config = DashboardConfig(database_url=None, auth="none", secret=SECRET)
    app = create_app(config)
    assert (await login(origin_post(app, b"password=anything"))).status_code == 404
    shown = await login_form(make_request(app, "/login", "next=/bad-events", user=None))
    assert (shown.status_code, shown.headers["location"]) == (303, "/bad-events")


async def test_login_form_sends_a_signed_in_user_on_but_never_off_site() -> None:
    app = create_app(password_config(None))
    form = await login_form(make_request(app, "/login", "next=/customers", user=None))
    assert form.status_code == 200
    assert 'value="/customers"' in bytes(form.body).decode()
    signed_in = await login_form(make_request(app, "/login", "next=//evil.test/", user="admin"))
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/")


async def test_bad_events_per_reason_replayed_against_still_bad_and_paged_samples(
    app: Starlette,
) -> None:
    conn = await asyncpg.connect(state(app).config.database_url)
    try:  # 30 more of one reason in the hour; 12 of them sent back by `clickstream replay`
        await conn.execute(
            "INSERT INTO bad_events (received_at, source, reason, reason_class, raw, replayed_at)"
            " SELECT '2026-05-01 12:00Z'::timestamptz + n * interval '1 minute', 'app',"
            " '$.user_id: too long', 'validation', '{}',"
            " CASE WHEN n <= 12 THEN '2026-05-01 12:30Z'::timestamptz END"
            " FROM generate_series(1, 30) n"
        )
    finally:
        await conn.close()

    async def read(query: str) -> Any:
        return answer(await api_bad_events(make_request(app, "/api/bad-events", query)))

    everything = await read("range=1h")
    assert everything["reasons"][:2] == [
        {"reason_class": "validation", "reason": "$.user_id: too long", "still_bad": 18,
         "replayed": 12},
        {"reason_class": "envelope", "reason": "envelope: not msgpack", "still_bad": 1,
         "replayed": 0},
    ]  # fmt: skip
    assert (everything["matching"], everything["pages"], len(everything["samples"])) == (33, 2, 20)

    one = "range=1h&reason=validation&reason_text=%24.user_id%3A+too+long"
    first, second = await read(one), await read(f"{one}&page=2")
    assert (first["matching"], first["pages"], second["page"]) == (30, 2, 2)
    samples = first["samples"] + second["samples"]
    assert len({s["id"] for s in samples}) == 30  # no sample twice, none left out
    assert {s["reason"] for s in samples} == {"$.user_id: too long"}
    assert sum(s["replayed_at"] is not None for s in samples) == 12
    assert [s["received_at"] for s in samples] == sorted(
        (s["received_at"] for s in samples), reverse=True
    )  # newest first, across the pages
    assert (await read(f"{one}&page=9"))["page"] == 2  # past the end: the last page

    refused = await api_bad_events(make_request(app, "/api/bad-events", "range=1h&page=0"))
    assert refused.status_code == 400
    assert answer(refused)["error"].startswith("page:")
