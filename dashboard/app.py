"""The dashboard's web app: HTML pages (Jinja2) and the JSON endpoints their charts poll.

Pages render the frame and the range selector; dashboard/static/app.js fetches the JSON
endpoints (same query string as the page, so a shared URL shows the same view) and draws the
charts as SVG, polling every few seconds. Endpoints are documented in dashboard/README.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from clickstream_contract.config import connect_options
from dashboard import queries
from dashboard.auth import KeySource, http_key_source, sign_session, verify_password
from dashboard.config import DashboardConfig
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


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    config: DashboardConfig, *, keys: KeySource | None = None, clock: Clock = utc_now
) -> Starlette:
    """The ASGI app. `keys` is where IAP signing keys come from (Google's, unless injected)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            **connect_options(config.database_url), min_size=2, max_size=8
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    def pool(request: Request) -> asyncpg.Pool:
        return request.app.state.pool

    def page(request: Request, name: str, **context: Any) -> Response:
        status = 200
        try:
            time_range: TimeRange | None = parse_range(request.query_params, clock())
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
                "auth": config.auth,
                "config": config,
                "presets": list(PRESETS),
                "time_range": time_range,
                "range_error": error,
                "range_query": urlencode(range_query),
                **context,
            },
            status_code=context.get("status_code", status),
        )

    def range_endpoint(
        read: Callable[[asyncpg.Pool, TimeRange, Request], Awaitable[dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                time_range = parse_range(request.query_params, clock())
            except RangeError as problem:
                return JSONResponse({"error": str(problem)}, status_code=400)
            return json(await read(pool(request), time_range, request))

        return endpoint

    async def overview(request: Request) -> Response:
        return page(request, "overview.html", page_name="overview")

    async def bad_events_page(request: Request) -> Response:
        return page(request, "bad_events.html", page_name="bad-events")

    async def customers_page(request: Request) -> Response:
        query = request.query_params.get("q", "")
        found = await queries.search_customers(pool(request), query)
        return page(request, "customers.html", page_name="customers", search=found)

    async def customer_page(request: Request) -> Response:
        profile = await queries.customer_profile(pool(request), request.path_params["key"])
        return page(
            request,
            "customer.html",
            page_name="customers",
            profile=profile,
            visitor_key=request.path_params["key"],
            status_code=200 if profile else 404,
        )

    async def api_customers(request: Request) -> Response:
        return json(
            await queries.search_customers(pool(request), request.query_params.get("q", ""))
        )

    async def api_customer(request: Request) -> Response:
        profile = await queries.customer_profile(pool(request), request.path_params["key"])
        if profile is None:
            return JSONResponse({"error": "no such customer"}, status_code=404)
        return json(profile)

    async def login_form(request: Request) -> Response:
        if config.auth != "password" or request.state.user:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return login_page(request, None, 200)

    def login_page(request: Request, error: str | None, status: int) -> Response:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": error, "next": safe_next(request.query_params.get("next"))},
            status_code=status,
        )

    async def login(request: Request) -> Response:
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
        ok = await asyncio.to_thread(
            verify_password, form.get("password", ""), config.password_hash
        )
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

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    def api_read(
        read: Callable[..., Awaitable[dict[str, Any]]], *, needs_now: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def call(db: asyncpg.Pool, time_range: TimeRange, request: Request) -> dict[str, Any]:
            return await (read(db, time_range, clock()) if needs_now else read(db, time_range))

        return range_endpoint(call)

    async def bad_events_read(
        db: asyncpg.Pool, time_range: TimeRange, request: Request
    ) -> dict[str, Any]:
        return await queries.bad_events(db, time_range, request.query_params.get("reason") or None)

    routes = [
        Route("/", overview),
        Route("/customers", customers_page),
        Route("/customers/{key:path}", customer_page),
        Route("/bad-events", bad_events_page),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/api/kpis", api_read(queries.kpis, needs_now=True)),
        Route("/api/timeseries", api_read(queries.timeseries)),
        Route("/api/funnel", api_read(queries.funnel)),
        Route("/api/products", api_read(queries.products)),
        Route("/api/traffic", api_read(queries.traffic)),
        Route("/api/devices", api_read(queries.devices)),
        Route("/api/bad-events", range_endpoint(bad_events_read)),
        Route("/api/customers", api_customers),
        Route("/api/customers/{key:path}", api_customer),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(RequireIdentity, config=config, keys=keys or http_key_source()),
        ],
    )


def json(data: dict[str, Any]) -> Response:
    return JSONResponse(data, headers={"cache-control": "no-store"})


async def read_limited(request: Request, limit: int) -> bytes | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body
