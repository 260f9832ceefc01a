"""Nasty input: a corpus of bodies (tests/corpus/, plus large ones generated here) and
property tests over the contract and the HTTP layer. Nothing gets a 5xx; each nasty body is
refused with a message that says what was wrong; the gateway stays healthy after each.

`CLICKSTREAM_FUZZ_EXAMPLES=N` sets the generated inputs per property test (default: a short CI
run). The long run (with tests/test_schemathesis.py, over 100k inputs in all):
    CLICKSTREAM_FUZZ_EXAMPLES=30000 .venv/bin/pytest tests/test_bad_input.py \
        tests/test_schemathesis.py -p no:randomly -q
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from gateway_server import GatewayProcess, event, running_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickstream_contract.config import Settings
from gateway.app import create_app
from gateway.parsing import HTTPError, check_utf8, gunzip
from gateway.settings import GatewaySettings
from gateway.validation import check_batch, check_single

pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag")
CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("CLICKSTREAM_FUZZ_EXAMPLES", "300"))
AUTH = {"authorization": "Bearer test-key"}
JSON = {**AUTH, "content-type": "application/json"}


@pytest.fixture(scope="module")
def gateway(
    pubsub_emulator_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    project = f"test-bad-{uuid.uuid4().hex[:8]}"
    # Fuzzing sends bad keys on purpose: keep the per-address limit out of the way.
    env = {"CLICKSTREAM_GATEWAY_AUTH_MAX_FAILURES": "1000000000"}
    with running_gateway(
        pubsub_emulator_host, project, tmp_path_factory.mktemp("bad-input"), env
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        yield client


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def gzip_bomb(decompressed: int = 200 * 1024 * 1024) -> bytes:
    """`decompressed` bytes of JSON whitespace in about a thousandth of the size."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1024 * 1024)
    out = [packer.compress(b'{"events": [')]
    out += [packer.compress(block) for _ in range(decompressed // len(block))]
    return b"".join([*out, packer.compress(b"]}"), packer.flush()])


def deep(depth: int) -> bytes:
    return (
        json.dumps(event()).encode()[:-1] + b', "properties": ' + b"[" * depth + b"]" * depth + b"}"
    )


# name -> (path, body, extra headers, what the answer must say)
Case = tuple[str, Callable[[], bytes], dict[str, str], str]
CASES: dict[str, Case] = {
    "invalid UTF-8": ("/v1/events", lambda: corpus("invalid_utf8.json"), {}, "not valid UTF-8"),
    "invalid UTF-8, gzipped": (
        "/v1/events",
        lambda: gzip.compress(corpus("invalid_utf8.json")),
        {"content-encoding": "gzip"},
        "not valid UTF-8",
    ),
    "lone surrogate": ("/v1/events", lambda: corpus("lone_surrogate.json"), {}, "surrogate"),
    "NaN": ("/v1/events", lambda: corpus("nan.json"), {}, "not valid JSON"),
    "Infinity": ("/v1/events", lambda: corpus("infinity.json"), {}, "not valid JSON"),
    "integer past 2^64": (
        "/v1/events",
        lambda: corpus("integer_past_2_64.json"),
        {},
        "$.product.quantity",
    ),
    "10k-deep nesting": ("/v1/events", lambda: deep(10_000), {}, "$.properties"),
    "10k-deep nesting in a batch": (
        "/v1/batch",
        lambda: b'{"events": [' + deep(10_000) + b"]}",
        {},
        "nested too deeply",
    ),
    "duplicate keys": ("/v1/events", lambda: corpus("duplicate_keys.json"), {}, "`order`"),
    "huge string": (
        "/v1/events",
        lambda: json.dumps(event(anonymous_id="x" * 2_000_000)).encode(),
        {},
        "over the",
    ),
    "string over the field limit": (
        "/v1/events",
        lambda: json.dumps(event(anonymous_id="x" * 20_000)).encode(),
        {},
        "$.anonymous_id",
    ),
    "empty body": ("/v1/events", lambda: b"", {}, "not valid JSON"),
    "empty batch body": ("/v1/batch", lambda: b"", {}, "batch"),
    "wrong content type": (
        "/v1/events",
        lambda: json.dumps(event()).encode(),
        {"content-type": "application/x-www-form-urlencoded"},
        "unsupported content type",
    ),
    "unknown content encoding": (
        "/v1/events",
        lambda: json.dumps(event()).encode(),
        {"content-encoding": "br"},
        "Content-Encoding",
    ),
    "truncated gzip": (
        "/v1/events",
        lambda: gzip.compress(json.dumps(event()).encode())[:-12],
        {"content-encoding": "gzip"},
        "gzip",
    ),
    "gzip that is not gzip": (
        "/v1/events",
        lambda: b"\x1f\x8b" + os.urandom(200),
        {"content-encoding": "gzip"},
        "gzip",
    ),
    "gzip bomb": ("/v1/batch", gzip_bomb, {"content-encoding": "gzip"}, "decompressed body"),
    "JSON with a BOM": ("/v1/events", lambda: corpus("bom.json"), {}, "byte-order mark"),
    "not JSON at all": ("/v1/events", lambda: corpus("not_json.json"), {}, "not valid JSON"),
    "truncated JSON": ("/v1/events", lambda: corpus("truncated_json.json"), {}, "truncated"),
    "a batch that is not a list": (
        "/v1/batch",
        lambda: corpus("batch_not_a_list.json"),
        {},
        "events",
    ),
    "a list where an event belongs": (
        "/v1/events",
        lambda: corpus("top_level_array.json"),
        {},
        "Expected `object`",
    ),
    "100k-element batch": (
        "/v1/batch",
        lambda: b'{"events": [' + b",".join([b"{}"] * 100_000) + b"]}",
        {},
        "100000 events",
    ),
}


def refused(response: httpx.Response, says: str) -> None:
    """A 4xx naming the problem, or (one bad event) a 202 that accepts nothing and says why;
    the rejected event is kept as a bad event either way."""
    assert response.status_code < 500, response.text
    error = response.json()
    if response.status_code == 202:
        assert error["accepted"] == 0, error
        message = error["rejected"][0]["error"]
    else:
        assert 400 <= response.status_code < 500
        message = error["error"]
    assert says in message, (says, message)


def healthy(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    ok = http.post("/v1/events", content=json.dumps(event()).encode(), headers=JSON)
    assert ok.status_code == 202, ok.text
    assert ok.json() == {"accepted": 1, "rejected": []}


@pytest.mark.parametrize("name", CASES)
def test_nasty_body_is_refused_clearly(
    name: str, http: httpx.Client, gateway: GatewayProcess
) -> None:
    path, body, headers, says = CASES[name]
    response = http.post(path, content=body(), headers={**JSON, **headers})
    refused(response, says)
    healthy(http)
    assert "unexpected error" not in gateway.log()


def test_a_body_cut_off_mid_stream_leaves_the_gateway_healthy(
    http: httpx.Client, gateway: GatewayProcess
) -> None:
    import socket

    host, port = gateway.url.removeprefix("http://").split(":")
    for _ in range(20):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: Bearer test-key\r\n"
                b"content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
                b'{"events": [{"event_id": "'
            )
    healthy(http)


async def test_a_malformed_content_length_is_refused_as_bad_input() -> None:
    """Granian refuses such a request itself (an empty 400) before the app sees it; a server
    that passes the header on must get a 400 naming it from the app, not its 503 for a bug."""
    app = create_app(Settings(write_keys={"test-key": "web"}), GatewaySettings())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        response = await client.post(
            "/v1/events",
            content=json.dumps(event()).encode(),
            headers={**JSON, "content-length": "12 apples"},
        )
    assert response.status_code == 400, response.text
    assert "Content-Length" in response.json()["error"]


# Property tests over the contract (in-process, fast) and the HTTP layer (Granian).

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)
FIELDS = [
    "event_id", "event_type", "occurred_at", "anonymous_id", "user_id", "session_id", "page",
    "context", "product", "order", "properties", "unknown",
]  # fmt: skip


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some fields replaced by arbitrary JSON, or removed."""
    base = event(
        user_id=draw(st.none() | st.text(max_size=10)),
        product={"product_id": "p-1", "price": 1.5, "quantity": 2},
    )
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            base[name] = draw(json_values)
        else:
            base.pop(name, None)
    return base


def outcome(check: Callable[[], Any]) -> int:
    """202 or the HTTPError's status; any other exception fails the test."""
    try:
        check()
    except HTTPError as exc:
        assert 400 <= exc.status < 500, exc.message
        return exc.status
    return 202


@pytest.mark.timeout(max(300, EXAMPLES // 10))
@settings(max_examples=EXAMPLES, deadline=None)
@given(body=st.binary(max_size=400) | mutated_events().map(msgspec.json.encode))
def test_contract_never_fails_unexpectedly(body: bytes) -> None:
    def single() -> None:
        check_utf8(body)
        checked = check_single(body, 32 * 1024)
        assert len(checked.good) + len(checked.rejected) == 1

    def batch() -> None:
        check_utf8(body)
        check_batch(b'{"events": [' + body + b"]}", 32 * 1024, 500)

    outcome(single)
    outcome(batch)
    outcome(lambda: gunzip(body, 4096))


@pytest.mark.timeout(max(300, EXAMPLES // 10))  # long runs: see the docstring
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(mutated_events(), min_size=1, max_size=5),
    batch=st.booleans(),
    compress=st.booleans(),
    content_type=st.sampled_from(
        ["application/json", "text/plain;charset=UTF-8", "APPLICATION/JSON", "", "text/csv"]
    ),
    auth=st.sampled_from(["bearer", "basic", "header", "query", "none", "garbage"]),
)
def test_http_layer_never_answers_5xx(
    http: httpx.Client,
    events: list[dict[str, Any]],
    batch: bool,
    compress: bool,
    content_type: str,
    auth: str,
) -> None:
    body = msgspec.json.encode({"events": events} if batch else events[0])
    headers = {"content-type": content_type}
    path = "/v1/batch" if batch else "/v1/events"
    if compress:
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    if auth == "bearer":
        headers["authorization"] = "Bearer test-key"
    elif auth == "basic":
        headers["authorization"] = "Basic dGVzdC1rZXk6"
    elif auth == "header":
        headers["x-write-key"] = "test-key"
    elif auth == "query":
        path += "?writeKey=test-key"
    elif auth == "garbage":
        headers["authorization"] = "Basic !!!"
    response = http.post(path, content=body, headers=headers)
    assert response.status_code in {202, 400, 401, 413, 415}, response.text
    assert "error" in response.json() or "accepted" in response.json()
