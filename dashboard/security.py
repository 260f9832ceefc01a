"""Middleware every request passes: security headers, then access control.

Unauthenticated requests get 401 JSON on /api/ and a redirect to the login form elsewhere; only
PUBLIC_PATHS (the login form, its stylesheet and the health check) are open.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.auth import IAP_HEADER, AuthError, KeySource, read_session, verify_iap_assertion
from dashboard.config import DashboardConfig

SESSION_COOKIE = "clickstream_session"
PUBLIC_PATHS = frozenset({"/login", "/static/style.css", "/healthz"})

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def identify(conn: HTTPConnection, config: DashboardConfig, keys: KeySource) -> str | None:
    """Who is asking, or None when the request proves nobody."""
    if config.auth == "none":
        return "local (no auth)"
    try:
        if config.auth == "iap":
            assert config.iap_audience is not None
            token = conn.headers.get(IAP_HEADER)
            return await verify_iap_assertion(token, config.iap_audience, keys) if token else None
        cookie = conn.cookies.get(SESSION_COOKIE)
        return read_session(cookie, config.secret) if cookie else None
    except AuthError:
        return None


class RequireIdentity:
    def __init__(self, app: ASGIApp, config: DashboardConfig, keys: KeySource) -> None:
        self.app, self.config, self.keys = app, config, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        user = await identify(conn, self.config, self.keys)
        scope.setdefault("state", {})["user"] = user
        if user is None and scope["path"] not in PUBLIC_PATHS:
            response: Response
            if scope["path"].startswith("/api/"):
                response = JSONResponse({"error": "authentication required"}, status_code=401)
            else:
                target = scope["path"] + (f"?{conn.url.query}" if conn.url.query else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def same_origin(request: Request) -> bool:
    """CSRF check for POSTs: a browser sends Origin (or Sec-Fetch-Site) on every POST; a
    cross-site one is refused. Hosts are compared, not schemes, since TLS may end at a proxy."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        site = request.headers.get("sec-fetch-site")
        return origin is None and site in (None, "same-origin", "none")
    return urlsplit(origin).netloc == request.headers.get("host")


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path on this site (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
