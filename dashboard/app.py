"""The dashboard's web app: HTML pages (Jinja2) and the JSON endpoints their charts poll.

Pages render the frame and the range selector; dashboard/static/app.js fetches the JSON
endpoints (same query string as the page, so a shared URL shows the same view) and draws the
charts as SVG, polling every few seconds. Endpoints are documented in dashboard/README.md.

Handlers are plain module-level functions of a request. What they share (settings, clock,
database pool) is an `AppState` that `create_app` stores on the app as `app.state.dashboard`;
handlers reach it through `app_state(request)`, so each one can be called on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from clickstream_contract.config import connect_options
from dashboard import listing, queries
from dashboard.auth import KeySource, http_key_source, sign_session, verify_password
from dashboard.config import DashboardConfig
from dashboard.listing import ListError, parse_customer_query
from dashboard.ranges import PRESETS, RangeError, TimeRange, parse_range
from dashboard.security import (
    SESSION_COOKIE,
    RequireIdentity,
    SecurityHeaders,
    safe_next,
    same_origin,
)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
MAX_FORM_BYTES = 4096

Clock = Callable[[], datetime]
# One read of a range endpoint: the pool and the parsed range in, the JSON answer out.
RangeRead = Callable[[asyncpg.Pool, TimeRange], Awaitable[dict[str, Any]]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class AppState:
    """What every handler shares, kept on the app as `app.state.dashboard`."""

    config: DashboardConfig
    clock: Clock = utc_now
    # Opened by `lifespan` at start-up, closed at shutdown.
    pool: asyncpg.Pool | None = None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.dashboard
    return state


def pool(request: Request) -> asyncpg.Pool:
    db = app_state(request).pool
    if db is None:
        raise RuntimeError("no database pool: the app's lifespan has not started")
    return db


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Hold the database pool open for as long as the app runs."""
    state: AppState = app.state.dashboard
    db = await asyncpg.create_pool(
        **connect_options(state.config.database_url), min_size=2, max_size=8
    )
    state.pool = db
    try:
        yield
    finally:
        state.pool = None
        await db.close()


# Responses


def json(data: dict[str, Any]) -> Response:
    """A JSON answer the browser never caches: charts poll for fresh numbers."""
    return JSONResponse(data, headers={"cache-control": "no-store"})


def page(request: Request, name: str, **context: Any) -> Response:
    """Render a page template with the frame's context (user, settings, range selector).

    A bad range still renders the page (with the error shown) but answers 400; a
    `status_code` in `context` wins over both.
    """
    state = app_state(request)
    status = 200
    try:
        time_range: TimeRange | None = parse_range(request.query_params, state.clock())
        error = None
    except RangeError as problem:
        time_range, error, status = None, str(problem), 400
    range_query = {
        key: request.query_params[key]
        for key in ("range", "from", "to")
        if key in request.query_params
    }
    return templates.TemplateResponse(
        request,
        name,
        {
            "user": request.state.user,
            "auth": state.config.auth,
            "config": state.config,
            "presets": list(PRESETS),
            "time_range": time_range,
            "range_error": error,
            "range_query": urlencode(range_query),
            **context,
        },
        status_code=context.get("status_code", status),
    )


async def range_json(request: Request, read: RangeRead) -> Response:
    """Answer a range endpoint: 400 with the rule broken, else `read`'s answer as JSON."""
    try:
        time_range = parse_range(request.query_params, app_state(request).clock())
    except RangeError as problem:
        return JSONResponse({"error": str(problem)}, status_code=400)
    return json(await read(pool(request), time_range))


# Pages


async def overview(request: Request) -> Response:
    return page(request, "overview.html", page_name="overview")


async def bad_events_page(request: Request) -> Response:
    return page(request, "bad_events.html", page_name="bad-events")


async def read_customers(request: Request) -> dict[str, Any]:
    """The page of customers the query string asks for (raises RangeError / ListError)."""
    query = request.query_params
    time_range = parse_range(query, app_state(request).clock())
    return await queries.list_customers(pool(request), time_range, parse_customer_query(query))


def list_params(request: Request) -> dict[str, str]:
    """The customer list's own query parameters (range, search, sort, page) of this request."""
    names = ("range", "from", "to", *listing.PARAMETERS)
    return {name: request.query_params[name] for name in names if request.query_params.get(name)}


def customers_url(params: Mapping[str, str], **changes: str | None) -> str:
    merged = {name: value for name, value in {**params, **changes}.items() if value}
    return f"/customers?{urlencode(merged)}"


async def customers_page(request: Request) -> Response:
    """The customer list; its links carry the list's parameters, so going to a customer and
    back returns to the same range, order and page."""
    params = list_params(request)
    try:
        found: dict[str, Any] | None = await read_customers(request)
        error = None
    except RangeError:
        found, error = None, None  # page() shows the range's error
    except ListError as problem:
        found, error = None, str(problem)
    following, preceding = (found["next"], found["previous"]) if found else (None, None)
    fresh = {"after": None, "before": None}  # a new order or search starts at the first page
    return page(
        request,
        "customers.html",
        page_name="customers",
        customers=found,
        list_error=error,
        list_query=urlencode(params),
        sort_urls={sort: customers_url(params, sort=sort, **fresh) for sort in listing.SORTS},
        clear_search_url=customers_url(params, q=None, **fresh),
        next_url=following and customers_url(params, after=following, before=None),
        previous_url=preceding and customers_url(params, before=preceding, after=None),
        keep={name: params[name] for name in ("range", "from", "to", "sort") if name in params},
        **({"status_code": 400} if error else {}),
    )


async def customer_page(request: Request) -> Response:
    key = request.path_params["key"]
    profile = await queries.customer_profile(pool(request), key)
    return page(
        request,
        "customer.html",
        page_name="customers",
        profile=profile,
        visitor_key=key,
        back_url=customers_url(list_params(request)),
        status_code=200 if profile else 404,
    )


# JSON endpoints


async def api_kpis(request: Request) -> Response:
    clock = app_state(request).clock
    # "Active sessions" count back from the time of the read, not of the range.
    return await range_json(request, lambda db, time_range: queries.kpis(db, time_range, clock()))


async def api_timeseries(request: Request) -> Response:
    return await range_json(request, queries.timeseries)


async def api_funnel(request: Request) -> Response:
    return await range_json(request, queries.funnel)


async def api_products(request: Request) -> Response:
    return await range_json(request, queries.products)


async def api_traffic(request: Request) -> Response:
    return await range_json(request, queries.traffic)


async def api_devices(request: Request) -> Response:
    return await range_json(request, queries.devices)


async def api_bad_events(request: Request) -> Response:
    try:
        wanted = queries.parse_bad_events_query(request.query_params)
    except ValueError as problem:
        return JSONResponse({"error": str(problem)}, status_code=400)
    return await range_json(
        request, lambda db, time_range: queries.bad_events(db, time_range, wanted)
    )


async def api_customers(request: Request) -> Response:
    try:
        return json(await read_customers(request))
    except (RangeError, ListError) as problem:
        return JSONResponse({"error": str(problem)}, status_code=400)


async def api_customer(request: Request) -> Response:
    profile = await queries.customer_profile(pool(request), request.path_params["key"])
    if profile is None:
        return JSONResponse({"error": "no such customer"}, status_code=404)
    return json(profile)


# Sign-in


def login_page(request: Request, error: str | None, status: int) -> Response:
    return templates.TemplateResponse(
        request,
        "login.html",
        {"error": error, "next": safe_next(request.query_params.get("next"))},
        status_code=status,
    )


async def login_form(request: Request) -> Response:
    """The password form; without password auth, or when signed in already, go on to `next`."""
    if app_state(request).config.auth != "password" or request.state.user:
        return RedirectResponse(safe_next(request.query_params.get("next")), 303)
    return login_page(request, None, 200)


async def login(request: Request) -> Response:
    """Check the form's password; on success set the signed session cookie and go to `next`."""
    config = app_state(request).config
    if config.auth != "password":
        return PlainTextResponse("password login is not enabled", status_code=404)
    if not same_origin(request):
        return PlainTextResponse("cross-site login refused", status_code=403)
    body = await read_limited(request, MAX_FORM_BYTES)
    if body is None:
        return PlainTextResponse("form too large", status_code=413)
    form = {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}
    assert config.password_hash is not None
    # scrypt takes tens of milliseconds on purpose: keep it off the event loop.
    ok = await asyncio.to_thread(verify_password, form.get("password", ""), config.password_hash)
    if not ok:
        return login_page(request, "Wrong password.", 401)
    response = RedirectResponse(safe_next(form.get("next")), 303)
    response.set_cookie(
        SESSION_COOKIE,
        sign_session("admin", config.secret, config.session_hours * 3600),
        max_age=config.session_hours * 3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    if not same_origin(request):
        return PlainTextResponse("cross-site logout refused", status_code=403)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
    return response


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past `limit` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


routes: list[BaseRoute] = [
    Route("/", overview),
    Route("/customers", customers_page),
    Route("/customers/{key:path}", customer_page),
    Route("/bad-events", bad_events_page),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/healthz", healthz),
    Route("/api/kpis", api_kpis),
    Route("/api/timeseries", api_timeseries),
    Route("/api/funnel", api_funnel),
    Route("/api/products", api_products),
    Route("/api/traffic", api_traffic),
    Route("/api/devices", api_devices),
    Route("/api/bad-events", api_bad_events),
    Route("/api/customers", api_customers),
    Route("/api/customers/{key:path}", api_customer),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


def create_app(
    config: DashboardConfig, *, keys: KeySource | None = None, clock: Clock = utc_now
) -> Starlette:
    """The ASGI app. `keys` is where IAP signing keys come from (Google's, unless injected)."""
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(RequireIdentity, config=config, keys=keys or http_key_source()),
        ],
    )
    app.state.dashboard = AppState(config, clock)
    return app
