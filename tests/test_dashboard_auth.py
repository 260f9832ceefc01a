"""Access control: password hashes, signed session cookies, IAP assertions (verified with a
locally generated ES256 key injected as the key source), and every route closed without them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dashboard_testing import PASSWORD, drop_database, migrated_database
from google.auth import crypt, jwt
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from dashboard.app import create_app
from dashboard.auth import (
    IAP_HEADER,
    IAP_ISSUER,
    AuthError,
    hash_password,
    read_session,
    sign_session,
    verify_iap_assertion,
    verify_password,
)
from dashboard.config import ConfigError, DashboardConfig
from dashboard.security import PUBLIC_PATHS, SESSION_COOKIE

AUDIENCE = "/projects/123/global/backendServices/456"
ORIGIN = "http://dash.test"


def test_password_hash_round_trip() -> None:
    encoded = hash_password("s3cret-password")
    assert encoded.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret-password", encoded)
    assert not verify_password("s3cret-passwore", encoded)
    assert hash_password("same", salt=b"x" * 16) != hash_password("same")  # random salt
    with pytest.raises(ValueError, match="CLICKSTREAM_DASHBOARD_PASSWORD_HASH"):
        verify_password("x", "plain-text")


def test_session_cookie_is_signed_and_expires() -> None:
    secret = b"k" * 32
    token = sign_session("admin", secret, 60, now=1000)
    assert read_session(token, secret, now=1059) == "admin"
    with pytest.raises(AuthError, match="expired"):
        read_session(token, secret, now=1061)
    with pytest.raises(AuthError, match="signature"):
        read_session(token, b"other" * 8, now=1000)
    signature = token.partition(".")[2]
    forged = sign_session("root", b"guess" * 8, 60, now=1000).partition(".")[0]
    with pytest.raises(AuthError, match="signature"):
        read_session(f"{forged}.{signature}", secret, now=1000)


class IapKeys:
    """A local ES256 key pair standing in for Google's IAP signing key."""

    def __init__(self, key_id: str = "iap-test-key") -> None:
        private = ec.generate_private_key(ec.SECP256R1())
        self.key_id = key_id
        self.private_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.public_pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    async def source(self) -> Mapping[str, str]:
        return {self.key_id: self.public_pem}

    def token(self, **overrides: object) -> str:
        now = int(time.time())
        claims = {
            "iss": IAP_ISSUER,
            "aud": AUDIENCE,
            "sub": "accounts.google.com:1234",
            "email": "ana@example.com",
            "iat": now,
            "exp": now + 600,
            **overrides,
        }
        signer = crypt.ES256Signer.from_string(self.private_pem, self.key_id)
        return jwt.encode(signer, claims).decode()


async def test_iap_assertion_is_verified() -> None:
    keys = IapKeys()
    assert await verify_iap_assertion(keys.token(), AUDIENCE, keys.source) == "ana@example.com"
    with pytest.raises(AuthError, match="audience"):
        await verify_iap_assertion(keys.token(aud="/projects/9/other"), AUDIENCE, keys.source)
    with pytest.raises(AuthError, match="issuer"):
        await verify_iap_assertion(keys.token(iss="https://evil.test"), AUDIENCE, keys.source)
    with pytest.raises(AuthError, match="expired"):
        past = int(time.time()) - 3600
        await verify_iap_assertion(keys.token(iat=past, exp=past + 60), AUDIENCE, keys.source)
    impostor = IapKeys(key_id=keys.key_id)  # same key id, another private key
    with pytest.raises(AuthError, match="signature"):
        await verify_iap_assertion(impostor.token(), AUDIENCE, keys.source)
    with pytest.raises(AuthError):
        await verify_iap_assertion("not.a.jwt", AUDIENCE, keys.source)


def test_config_refuses_to_run_without_access_control() -> None:
    with pytest.raises(ConfigError, match="--insecure-no-auth"):
        DashboardConfig.from_env({})
    assert DashboardConfig.from_env({}, insecure_no_auth=True).auth == "none"
    local = DashboardConfig.from_env({"CLICKSTREAM_DASHBOARD_PASSWORD": "pw-for-dev"})
    assert local.auth == "password"
    assert local.password_hash is not None
    assert verify_password("pw-for-dev", local.password_hash)
    with pytest.raises(ValueError, match="CLICKSTREAM_DASHBOARD_PASSWORD_HASH"):
        DashboardConfig.from_env({"CLICKSTREAM_DASHBOARD_PASSWORD_HASH": "oops"})
    iap = DashboardConfig.from_env(
        {"CLICKSTREAM_DASHBOARD_IAP_AUDIENCE": AUDIENCE, "CLICKSTREAM_DASHBOARD_SECRET": "x"}
    )
    assert (iap.auth, iap.iap_audience, iap.secret) == ("iap", AUDIENCE, b"x")


@pytest.fixture
async def empty_db(database_url: str) -> AsyncIterator[str]:
    url = await migrated_database(database_url)
    yield url
    await drop_database(database_url, url)


def concrete_paths(client: TestClient) -> list[str]:
    """One request path for every route and mount of the app."""
    paths = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            paths.append(route.path.replace("{key:path}", "alice@example.com"))
        elif isinstance(route, Mount):
            paths.append(f"{route.path}/app.js")
    return sorted(set(paths))


@pytest.fixture
def password_client(empty_db: str) -> Iterator[TestClient]:
    config = DashboardConfig(
        database_url=empty_db,
        auth="password",
        secret=b"s" * 32,
        password_hash=hash_password(PASSWORD),
    )
    with TestClient(create_app(config), base_url=ORIGIN) as client:
        yield client


def test_every_route_needs_a_login(password_client: TestClient) -> None:
    paths = concrete_paths(password_client)
    assert "/api/kpis" in paths and "/static/app.js" in paths and "/customers/{key}" not in paths
    for path in paths:
        if path in PUBLIC_PATHS:
            continue
        for method in ("GET", "POST"):
            response = password_client.request(method, path, follow_redirects=False)
            if path.startswith("/api/"):
                assert response.status_code in (401, 405), (method, path)
                if response.status_code == 401:
                    assert response.json() == {"error": "authentication required"}
            else:
                assert response.status_code == 303, (method, path)
                assert response.headers["location"].startswith("/login?next=")


def test_login_sets_a_strict_cookie_and_security_headers(password_client: TestClient) -> None:
    form = {"password": PASSWORD, "next": "/bad-events?range=7d"}
    wrong = password_client.post(
        "/login", data={**form, "password": "nope"}, headers={"origin": ORIGIN}
    )
    assert wrong.status_code == 401
    assert "Wrong password" in wrong.text
    cross_site = password_client.post(
        "/login", data=form, headers={"origin": "https://evil.test"}, follow_redirects=False
    )
    assert cross_site.status_code == 403
    assert SESSION_COOKIE not in cross_site.headers.get("set-cookie", "")
    ok = password_client.post(
        "/login", data=form, headers={"origin": ORIGIN}, follow_redirects=False
    )
    assert ok.status_code == 303
    assert ok.headers["location"] == "/bad-events?range=7d"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = password_client.get("/bad-events")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert password_client.get("/api/customers").status_code == 200
    logout = password_client.post("/logout", headers={"origin": ORIGIN}, follow_redirects=False)
    assert logout.status_code == 303
    assert password_client.get("/api/customers").status_code == 401


def test_login_never_redirects_off_site(password_client: TestClient) -> None:
    for target in ("//evil.test/", "https://evil.test/", "/\\evil.test"):
        response = password_client.post(
            "/login",
            data={"password": PASSWORD, "next": target},
            headers={"origin": ORIGIN},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/", target


def test_iap_identity_guards_every_route(empty_db: str) -> None:
    keys = IapKeys()
    config = DashboardConfig(
        database_url=empty_db, auth="iap", secret=b"s" * 32, iap_audience=AUDIENCE
    )
    with TestClient(create_app(config, keys=keys.source), base_url=ORIGIN) as client:
        assert client.get("/api/customers").status_code == 401
        forged = IapKeys(key_id=keys.key_id).token()
        assert client.get("/api/customers", headers={IAP_HEADER: forged}).status_code == 401
        assert client.get("/api/customers", headers={IAP_HEADER: keys.token()}).status_code == 200
        page = client.get("/customers", headers={IAP_HEADER: keys.token()})
        assert "ana@example.com" in page.text
        assert 'action="/logout"' not in page.text  # IAP signs people out, not the app
