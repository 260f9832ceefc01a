"""Who gets in: write keys (constant time, never logged, rotation, guessing slowed down), client
addresses (X-Forwarded-For only from trusted proxies, optional truncation), the dashboard's
locks on every route, and no secrets in the repository."""

from __future__ import annotations

import base64
import ipaddress
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from gateway_server import event, pull, running_gateway
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from gateway import parsing
from gateway.auth_limit import AuthFailures
from gateway.client_ip import ClientAddresses, parse_networks
from gateway.parsing import WriteKeys

pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag")
REPO = Path(__file__).resolve().parent.parent


def body() -> bytes:
    return httpx.Request("POST", "/", json=event()).content


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


# Write keys


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = parsing.hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(parsing.hmac, "compare_digest", recording)
    keys = WriteKeys({"k1": "web", "k2": "backend", "k3": "web"})
    for presented, expected in ((b"k1", "web"), (b"k3", "web"), (b"nope", None), (b"k", None)):
        calls.clear()
        assert keys.source_for(presented) == expected
        # No early exit and no `==`: the time does not say which key (or prefix) matched.
        assert [a for a, _ in calls] == [b"k1", b"k2", b"k3"]


async def test_keys_rotate_without_downtime_and_are_never_logged(
    pubsub_emulator_host: str, tmp_path: Path
) -> None:
    # Rotation: old and new key are configured at once for the same source; clients move over,
    # then the old key is removed. Both work meanwhile and the events look the same downstream.
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = {"CLICKSTREAM_WRITE_KEYS": f"{old}=web,{new}=web"}
    project = f"test-sec-{uuid.uuid4().hex[:8]}"
    with running_gateway(pubsub_emulator_host, project, tmp_path, env) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            basic = base64.b64encode(f"{new}:".encode()).decode()
            accepted = [
                await client.post("/v1/events", content=body(), headers=bearer(old)),
                await client.post(
                    "/v1/events",
                    content=body(),
                    headers={"authorization": f"Basic {basic}", "content-type": "text/plain"},
                ),
                await client.post(
                    f"/v1/events?writeKey={new}",
                    content=body(),
                    headers={"content-type": "text/plain"},
                ),
            ]
            assert [r.status_code for r in accepted] == [202, 202, 202]
            refused = await client.post("/v1/events", content=body(), headers=bearer(wrong))
            assert refused.status_code == 401
            assert wrong not in refused.text
            # Error paths that log: a body that is not JSON, a batch of garbage.
            await client.post("/v1/events", content=b"{oops", headers=bearer(old))
            await client.post("/v1/batch", content=b'{"events": 5}', headers=bearer(new))
        pulled = await pull(gw.settings, gw.settings.events_subscription, events=3)
        assert {group.source for p in pulled for group in p.envelope.groups} == {"web"}
    log = gw.log()
    assert "publish queue drained" in log  # the log was captured to the end
    for key in (old, new, wrong):
        assert key not in log


def test_auth_failures_block_an_address_for_the_rest_of_its_window() -> None:
    now = [0.0]
    limit = AuthFailures(max_failures=3, window_s=60, clock=lambda: now[0], max_tracked=2)
    for _ in range(3):
        assert limit.retry_after("a") is None
        limit.failed("a")
    now[0] = 20.2
    assert limit.retry_after("a") == 40  # what is left of the window, rounded up
    assert limit.retry_after("b") is None  # others are not affected
    now[0] = 60.0
    assert limit.retry_after("a") is None  # a new window
    limit.failed("b")
    limit.failed("c")
    limit.failed("d")  # bounded: the oldest entry made room
    assert len(limit._windows) == 2


async def test_unknown_keys_are_rate_limited_per_client_address(
    pubsub_emulator_host: str, tmp_path: Path
) -> None:
    env = {
        "CLICKSTREAM_GATEWAY_AUTH_MAX_FAILURES": "3",
        "CLICKSTREAM_GATEWAY_AUTH_WINDOW_S": "30",
        # Loopback is the proxy here, so each "client" is told apart by X-Forwarded-For.
        "CLICKSTREAM_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    project = f"test-sec-{uuid.uuid4().hex[:8]}"
    with running_gateway(pubsub_emulator_host, project, tmp_path, env) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:

            async def post(key: str, client_ip: str) -> httpx.Response:
                headers = {**bearer(key), "x-forwarded-for": client_ip}
                return await client.post("/v1/events", content=body(), headers=headers)

            guesser, other = "198.51.100.7", "198.51.100.8"
            assert [(await post(f"guess-{i}", guesser)).status_code for i in range(3)] == [401] * 3
            blocked = await post("guess-4", guesser)
            assert blocked.status_code == 429
            assert 0 < int(blocked.headers["retry-after"]) <= 30
            assert "too many failed authentications" in blocked.json()["error"]
            # Blocked before the key is checked, or a right guess would still show.
            assert (await post("test-key", guesser)).status_code == 429
            assert (await post("test-key", other)).status_code == 202
            # A spoofed header from an untrusted peer is not a way around it: covered by
            # test_forwarded_for_is_trusted_only_from_configured_proxies.


# Client addresses


def test_forwarded_for_is_trusted_only_from_configured_proxies() -> None:
    lb = ClientAddresses(parse_networks("10.0.0.0/8, 2001:db8::/32"), truncate_ips=False)

    def client(peer: str, *xff: str) -> str:
        return str(lb.client(peer, [h.encode() for h in xff]))

    # An untrusted peer is the client, whatever it claims.
    assert client("203.0.113.9", "1.2.3.4") == "203.0.113.9"
    # Through the load balancer: the rightmost hop that is not a trusted proxy.
    assert client("10.0.0.2", "6.6.6.6, 203.0.113.9") == "203.0.113.9"
    assert client("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.1.2.3") == "203.0.113.9"
    assert client("10.0.0.2", "6.6.6.6", "203.0.113.9") == "203.0.113.9"  # two headers
    assert client("10.0.0.2", "[2001:db9::1]:443") == "2001:db9::1"
    assert client("10.0.0.2", "203.0.113.9:5555") == "203.0.113.9"
    assert client("::ffff:10.0.0.2", "203.0.113.9") == "203.0.113.9"
    # Garbage stops the walk at the last address a trusted hop vouched for.
    assert client("10.0.0.2", "203.0.113.9, not-an-ip") == "10.0.0.2"
    assert client("10.0.0.2", "not-an-ip, 203.0.113.9") == "203.0.113.9"
    assert client("10.0.0.2") == "10.0.0.2"
    # Without trusted proxies the header means nothing.
    nobody = ClientAddresses((), truncate_ips=False)
    assert str(nobody.client("127.0.0.1", [b"1.2.3.4"])) == "127.0.0.1"
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8' is not a CIDR"):
        parse_networks("10.0.0.0/8,10.0.0.300/8")


def test_addresses_are_truncated_when_privacy_asks() -> None:
    private = ClientAddresses((), truncate_ips=True)
    assert private.stored(ipaddress.ip_address("203.0.113.77")) == "203.0.113.0"
    assert private.stored(ipaddress.ip_address("2001:db8:abcd:12:3::4")) == "2001:db8:abcd::"
    assert private.stored(None) is None
    full = ClientAddresses((), truncate_ips=False)
    assert full.stored(ipaddress.ip_address("203.0.113.77")) == "203.0.113.77"


async def test_published_client_ip_follows_proxy_and_privacy_settings(
    pubsub_emulator_host: str, tmp_path: Path
) -> None:
    env = {"CLICKSTREAM_TRUSTED_PROXIES": "127.0.0.0/8", "CLICKSTREAM_IP_TRUNCATE": "on"}
    project = f"test-sec-{uuid.uuid4().hex[:8]}"
    with running_gateway(pubsub_emulator_host, project, tmp_path, env) as gw:
        headers = {**bearer("test-key"), "x-forwarded-for": "6.6.6.6, 203.0.113.77"}
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            response = await client.post("/v1/events", content=body(), headers=headers)
        assert response.status_code == 202
        pulled = await pull(gw.settings, gw.settings.events_subscription, events=1)
    assert [g.client_ip for p in pulled for g in p.envelope.groups] == ["203.0.113.0"]


# Dashboard


@pytest.fixture
def dashboard(database_url: str) -> TestClient:
    from dashboard.app import create_app
    from dashboard.auth import hash_password
    from dashboard.config import DashboardConfig

    config = DashboardConfig(
        database_url=database_url,
        auth="password",
        secret=b"s" * 32,
        password_hash=hash_password("a long test password"),
    )
    return TestClient(create_app(config), base_url="https://dash.example")


def test_dashboard_refuses_every_method_on_every_route_without_a_valid_session(
    dashboard: TestClient,
) -> None:
    from dashboard.auth import sign_session
    from dashboard.security import PUBLIC_PATHS, SECURITY_HEADERS, SESSION_COOKIE

    paths = set()
    for route in dashboard.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            paths.add(route.path.replace("{key:path}", "ana@example.com"))
        elif isinstance(route, Mount):
            paths |= {f"{route.path}/app.js", f"{route.path}/../../pyproject.toml"}
    paths |= {"/nope", "/api/nope"}
    forged = {
        "none": None,
        "garbage": "garbage",
        "wrong secret": sign_session("admin", b"x" * 32, 3600),
        "expired": sign_session("admin", b"s" * 32, 60, now=0),
    }
    with dashboard:
        for path in sorted(paths - PUBLIC_PATHS):
            for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
                for kind, cookie in forged.items():
                    dashboard.cookies.clear()
                    if cookie is not None:
                        dashboard.cookies.set(SESSION_COOKIE, cookie)
                    response = dashboard.request(method, path, follow_redirects=False)
                    what = (method, path, kind, response.status_code)
                    assert response.status_code in (303, 401, 404, 405), what
                    if response.status_code == 303:
                        assert response.headers["location"].startswith("/login"), what
                    assert b"Revenue" not in response.content, what
                    for name, value in SECURITY_HEADERS:
                        assert response.headers.get(name.decode()) == value.decode(), what


# Secrets in the repository

SECRET_PATTERNS = {
    "private key": re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service account key": re.compile(rb'"type"\s*:\s*"service_account"'),
    "Google API key": re.compile(rb"AIza[0-9A-Za-z_\-]{35}"),
    "AWS access key": re.compile(rb"AKIA[0-9A-Z]{16}"),
    "GitHub token": re.compile(rb"gh[pousr]_[A-Za-z0-9]{36}"),
    "Slack token": re.compile(rb"xox[baprs]-[A-Za-z0-9-]{10,}"),
    "credential literal": re.compile(
        rb"""(?i)(?<![a-z])(pass(word)?|passwd|pwd|secret|api[_-]?key|token)(?![a-z])["']?\s*[:=]\s*"""
        rb"""["']([^"'\s]{4,})["']"""
    ),
    "password in URL": re.compile(rb"[a-z+]+://[^/\s:@'\"]+:([^@/\s'\"$]{3,})@"),
}
SECRET_FILES = re.compile(
    r"(^|/)(\.env|terraform\.tfvars|.*\.(pem|key|p12|pfx)|.*service[-_]?account.*\.json)$"
)
# Placeholder values that tests (and example files) use to show how real ones are handled;
# allowed there only. A new one is added here on purpose, after a look.
PLACEHOLDERS = frozenset(
    {b"nope", b"s3cret", b"pw-for-dev", b"from-secret-manager", b"at-least-16-characters"}
)


def placeholder_allowed(path: str, value: bytes) -> bool:
    if b"${" in value or value.startswith(b"{"):  # a reference: Terraform, f-string, template
        return True
    return value in PLACEHOLDERS and (path.startswith("tests/") or path.endswith(".example"))


def secrets_in(path: str, data: bytes) -> list[str]:
    found = [f"{path}: a file of a kind that holds secrets"] if SECRET_FILES.search(path) else []
    for name, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(data):
            value = match.group(match.lastindex or 0)
            if placeholder_allowed(path, value):
                continue
            line = data.count(b"\n", 0, match.start()) + 1
            found.append(f"{path}:{line}: {name}")
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    # Assembled from parts, so this file does not trip its own scan.
    samples = {
        "a.py": b'DB_PASSWORD = "' + b'hunter22"',
        "b.json": b'{"type": "service_' + b'account", "project_id": "x"}',
        "c.txt": b"-----BEGIN RSA PRIVATE " + b"KEY-----\nMIIE",
        "d.tf": b"key = AIza" + b"x" * 35,
        "e.sh": b"psql postgresql://app:" + b"topsecret@db/x",
        "terraform/terraform.tfvars": b"",
        "tests/f.py": b'password = "' + b's3cret"',  # a placeholder, allowed in tests
        "g.py": b'password = "' + b's3cret"',  # but not outside them
    }
    hits = {path for path, data in samples.items() if secrets_in(path, data)}
    assert hits == set(samples) - {"tests/f.py"}


def test_no_secrets_in_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if path.is_file():
            found += secrets_in(name.decode(), path.read_bytes())
    assert found == []
    assert len(files) > 50  # the scan saw the tree


# Erasure


async def test_erase_deletes_one_person_and_nobody_else(
    fresh_database_url: str, bigquery_emulator: dict[str, str]
) -> None:
    import asyncpg
    from processor_testing import BASE_TIME, envelope_of
    from processor_testing import event as sent

    from clickstream.erase import erase
    from clickstream_contract import envelope
    from clickstream_contract.config import Settings
    from processor.bigquery import create_sink
    from processor.bigquery_schema import bigquery_client, refresh_customer_daily
    from processor.core import Message, Processor
    from processor.migrations import migrate
    from processor.postgres import PostgresSink, create_sink_pool

    settings = Settings(
        project="clickstream-test",
        database_url=fresh_database_url,
        bigquery_dataset=f"t_{uuid.uuid4().hex[:10]}",
        bigquery_emulator_host=bigquery_emulator["BIGQUERY_EMULATOR_HOST"],
        bigquery_storage_emulator_host=bigquery_emulator["BIGQUERY_STORAGE_EMULATOR_HOST"],
    )
    ana = [
        sent("page_view", anonymous_id="anon-ana"),
        sent("product_view", anonymous_id="anon-ana", user_id="ana"),
        sent("purchase", anonymous_id="anon-ana-phone", user_id="ana"),
    ]
    bob = [sent("page_view", anonymous_id="anon-bob"), sent("purchase", user_id="bob")]
    refused = [sent("page_view", user_id="ana"), sent("page_view", user_id="bob")]

    def message(events: list[dict], kind: envelope.Kind = "events") -> Message:
        body = envelope_of(events, kind)
        return Message(uuid.uuid4().hex, body, envelope.attributes(kind, len(events)))

    await migrate(fresh_database_url)
    pool = await create_sink_pool(fresh_database_url)
    bigquery = await create_sink(settings)
    try:
        await Processor(PostgresSink(pool), [bigquery]).process(
            [message(ana), message(bob), message(refused[:1], "bad"), message(refused[1:], "bad")]
        )
    finally:
        await pool.close()
        await bigquery.close()
    client = bigquery_client(settings)
    customer_daily = f"`{settings.project}.{settings.bigquery_dataset}.customer_daily`"
    refresh_customer_daily(client, settings.bigquery_dataset, BASE_TIME)

    dry = await erase(settings, "ana", dry_run=True, bigquery=True)
    assert dry.anonymous_ids == ["anon-ana", "anon-ana-phone"]
    # Activity rows: one per visitor and batch (anon-ana's, ana's).
    assert dry.postgres["visitor_activity"] == 2 and dry.postgres["bad_events"] == 1
    # customer_daily: a row for anon-ana (before identify) and one for ana.
    assert dry.bigquery == {"events": 3, "bad_events": 1, "customer_daily": 2}
    done = await erase(settings, "ana", dry_run=False, bigquery=True)
    assert done.postgres == dry.postgres
    assert done.bigquery == dry.bigquery
    left = client.query(f"SELECT visitor_key FROM {customer_daily}").result()
    assert sorted(row["visitor_key"] for row in left) == ["anon-bob", "bob"]
    client.close()

    conn = await asyncpg.connect(fresh_database_url)
    try:
        rows = []
        for table in ("visitor_activity", "sessions", "customers", "bad_events", "session_state"):
            rows += [str(tuple(row)) for row in await conn.fetch(f"SELECT * FROM {table}")]
        text = " ".join(rows)
        assert "ana" not in text  # not a user id, an anonymous id, nor a raw payload
        assert await conn.fetchval("SELECT count(*) FROM visitor_activity") == len(bob)
        assert await conn.fetchval("SELECT count(*) FROM bad_events") == 1
        # Counts without identifiers stay: the day's purchases still add up.
        assert (
            await conn.fetchval(
                "SELECT sum(events) FROM metrics_minute WHERE event_type = 'purchase'"
            )
            == 2
        )
    finally:
        await conn.close()
    again = await erase(settings, "ana", dry_run=False, bigquery=True)
    assert set(again.postgres.values()) == {0} and again.bigquery == {
        "events": 0,
        "bad_events": 0,
        "customer_daily": 0,
    }
