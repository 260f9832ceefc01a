"""The Python SDK against the real gateway on loopback (tests/gateway_testing.py).

The gateway answers 503 with Retry-After while publishing fails, and then recovers: every event
must be published exactly once (no loss, no double count), retries must wait at least
Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from gateway_testing import LocalGateway, MemoryTransport, serving

from clickstream_contract.event import Product
from clickstream_sdk import AsyncClient, Backoff, Client
from clickstream_sdk.delivery import parse_retry_after
from gateway.settings import GatewaySettings

FAST = Backoff(base=0.01, cap=2.0, max_retries=5)
SHOE = Product(product_id="p-1", name="Trail shoe", category="Sports", price=89.5, currency="EUR")


def track_many(client: Client | AsyncClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        event_id = client.page_view(f"https://shop.example/p/{i}", anonymous_id=f"a-{i % 7}")
        assert event_id is not None
        ids.append(str(event_id))
    return ids


def assert_exactly_once(gateway: LocalGateway, ids: list[str]) -> None:
    counts = gateway.transport.published_counts()
    assert set(counts) == set(ids), "events lost or invented"
    assert max(counts.values()) == 1, "an event was published twice"


def test_sync_client_retries_503_until_recovery_without_loss_or_duplicates() -> None:
    with serving(GatewaySettings(retry_after_s=1), MemoryTransport(fail_next=2)) as gateway:
        with Client(gateway.write_key, url=gateway.url, batch_size=50, backoff=FAST) as client:
            ids = track_many(client, 250)
            assert client.flush(timeout=30)
            stats = client.stats
        assert_exactly_once(gateway, ids)
        assert (stats.accepted, stats.failed, stats.dropped, stats.retries) == (250, 0, 0, 2)
        requests = gateway.ingest_requests()
        assert [r.status for r in requests[:3]] == [503, 503, 202]
        # Retry-After: 1 is honoured even though the backoff base is 10 ms.
        assert requests[1].at - requests[0].at >= 0.95
        assert requests[2].at - requests[1].at >= 0.95
        assert requests[0].headers.get("content-encoding") == "gzip"
        # The retried request carried the very same events as the refused ones.
        refused = gateway.transport.failed_groups()
        assert [g.events for g in refused] == [gateway.transport.groups()[0].events] * 2


async def test_async_client_retries_503_until_recovery_without_loss_or_duplicates() -> None:
    with serving(GatewaySettings(retry_after_s=0), MemoryTransport(fail_next=3)) as gateway:
        async with AsyncClient(
            gateway.write_key, url=gateway.url, batch_size=40, backoff=FAST
        ) as client:
            ids = track_many(client, 200)
            await asyncio.wait_for(client.flush(), 30)
            stats = client.stats
        assert_exactly_once(gateway, ids)
        assert (stats.accepted, stats.failed, stats.retries) == (200, 0, 3)


def test_gives_up_after_max_retries_and_counts_the_events_as_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serving(GatewaySettings(retry_after_s=0), MemoryTransport(fail_next=100)) as gateway:
        backoff = Backoff(base=0.001, cap=0.01, max_retries=3)
        with Client(gateway.write_key, url=gateway.url, backoff=backoff) as client:
            track_many(client, 5)
            assert client.flush(timeout=30)
        assert len(gateway.ingest_requests()) == 4  # the first attempt and 3 retries
        assert (client.stats.failed, client.stats.accepted) == (5, 0)
        assert "gave up on 5 events" in caplog.text
        assert gateway.transport.groups() == []


def test_a_full_buffer_drops_new_events_counts_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with serving() as gateway:
        client = Client(
            gateway.write_key, url=gateway.url, max_buffer=10, batch_size=100, flush_interval=60
        )
        with caplog.at_level(logging.WARNING, logger="clickstream_sdk"):
            ids = [client.track("newsletter_signup", user_id=f"u-{i}") for i in range(15)]
        client.close()
        assert ids[10:] == [None] * 5
        assert client.stats.dropped == 5
        assert "buffer full" in caplog.text
        assert_exactly_once(gateway, [str(i) for i in ids[:10]])


def test_rejected_events_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Length limits are checked by the gateway's decoder, not when the event is built.
    bad = Product(product_id="p-2", name="x" * 300, price=10.0, currency="EUR")
    with serving() as gateway, Client(gateway.write_key, url=gateway.url) as client:
        good_id = client.add_to_cart(SHOE, anonymous_id="a-1")
        bad_id = client.add_to_cart(bad, anonymous_id="a-1")
        assert client.flush(timeout=10)
        assert (client.stats.accepted, client.stats.rejected) == (1, 1)
        assert "rejected" in caplog.text and "$.product.name" in caplog.text
        assert_exactly_once(gateway, [str(good_id)])
        # The refused event is kept as a bad event, with the reason.
        [refused] = gateway.transport.groups("bad")
        assert json.loads(refused.events[0])["event_id"] == str(bad_id)
        assert "$.product.name" in refused.reasons[0]


def test_contract_patterns_raise_at_the_call() -> None:
    with serving() as gateway, Client(gateway.write_key, url=gateway.url) as client:
        not_iso = Product(product_id="p-2", price=10.0, currency="euro")
        with pytest.raises(ValueError, match="currency"):
            client.add_to_cart(not_iso, anonymous_id="a-1")
        assert client.stats.enqueued == 0


def test_a_bad_write_key_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    with serving() as gateway, Client("wrong", url=gateway.url, backoff=FAST) as client:
        client.search("boots", results=12, anonymous_id="a-1")
        assert client.flush(timeout=10)
        assert [r.status for r in gateway.ingest_requests()] == [401]
        assert client.stats.failed == 1
        assert "HTTP 401" in caplog.text


def test_a_batch_refused_as_too_large_is_split() -> None:
    with serving(GatewaySettings(max_batch_events=30)) as gateway:
        with Client(gateway.write_key, url=gateway.url, batch_size=100) as client:
            ids = track_many(client, 100)
        assert_exactly_once(gateway, ids)
        assert client.stats.accepted == 100
        assert {r.status for r in gateway.ingest_requests()} == {202, 413}


def test_helpers_build_events_the_gateway_accepts() -> None:
    items = [SHOE, Product(product_id="p-3", price=5.25, currency="EUR", quantity=2)]
    with serving() as gateway, Client(gateway.write_key, url=gateway.url) as client:
        who = {"anonymous_id": "a-9", "session_id": "s-1"}
        client.page_view("https://shop.example/", title="Home", **who)  # type: ignore[arg-type]
        client.product_view(SHOE, **who)  # type: ignore[arg-type]
        client.search("shoe", results=3, **who)  # type: ignore[arg-type]
        client.add_to_cart(SHOE, **who)  # type: ignore[arg-type]
        client.remove_from_cart(SHOE, **who)  # type: ignore[arg-type]
        client.begin_checkout(items, currency="EUR", **who)  # type: ignore[arg-type]
        client.purchase("o-1", items, currency="EUR", user_id="u-1", anonymous_id="a-9")
        client.track("newsletter_signup", user_id="u-1", properties={"list": "weekly"})
        assert client.flush(timeout=10)
        assert client.stats.accepted == 8
    by_type = {e["event_type"]: e for e in gateway.transport.events()}
    assert by_type["purchase"]["order"]["revenue"] == 100.0  # 89.5 + 2 x 5.25
    assert by_type["begin_checkout"]["properties"] == {
        "value": 100.0,
        "item_count": 3,
        "currency": "EUR",
    }
    assert by_type["search"]["properties"] == {"query": "shoe", "results": 3}


def test_events_buffered_at_interpreter_exit_are_sent() -> None:
    """Neither client is closed by the program: the exit hooks flush them."""
    with serving() as gateway:
        script = textwrap.dedent(f"""
            import asyncio
            from clickstream_sdk import AsyncClient, Client
            sync = Client({gateway.write_key!r}, url={gateway.url!r}, flush_interval=60)
            for i in range(3):
                print(sync.track("sync_event", anonymous_id="a"))
            aclient = AsyncClient({gateway.write_key!r}, url={gateway.url!r}, flush_interval=60)
            async def main():
                for i in range(2):
                    print(aclient.track("async_event", anonymous_id="a"))
            asyncio.run(main())
        """)
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
        assert len(out) == 5
        assert_exactly_once(gateway, out)


def test_backoff_honours_retry_after_and_stays_within_the_cap() -> None:
    backoff, rng = Backoff(base=0.5, cap=8.0), random.Random(1)
    for attempt in range(12):
        assert 0 <= backoff.delay(attempt, None, rng) <= min(8.0, 0.5 * 2**attempt)
        assert backoff.delay(attempt, 3.0, rng) >= 3.0
        assert backoff.delay(attempt, 3600.0, rng) == 8.0
    delays = {round(backoff.delay(5, None, rng), 6) for _ in range(20)}
    assert len(delays) > 10, "jitter: retries of many clients must not line up"


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": later}, now=now) == 7.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_a_timed_out_request_is_resent_with_the_same_event_ids() -> None:
    """The gateway published the events but Pub/Sub acknowledged too late for the client: the
    retry must carry the same event_ids, which is what lets the platform drop the second copy."""
    with serving(transport=MemoryTransport(hold_next=1)) as gateway:
        with Client(gateway.write_key, url=gateway.url, timeout=0.5, backoff=FAST) as client:
            ids = track_many(client, 20)
            assert client.flush(timeout=30)
        first, second = gateway.transport.groups()
        assert [json.loads(e)["event_id"] for e in first.events] == ids
        assert [json.loads(e)["event_id"] for e in second.events] == ids
        assert client.stats.accepted == 20 and client.stats.retries == 1


@pytest.mark.parametrize("asynchronous", [False, True], ids=["Client", "AsyncClient"])
async def test_identify_links_the_ids_and_later_events_of_that_visitor_carry_the_user(
    asynchronous: bool,
) -> None:
    with serving() as gateway:
        client: Client | AsyncClient
        client = (AsyncClient if asynchronous else Client)(gateway.write_key, url=gateway.url)
        before = client.product_view(SHOE, anonymous_id="a-1")
        linked = client.identify("u-42", anonymous_id="a-1", traits={"plan": "gold"})
        after = client.add_to_cart(SHOE, anonymous_id="a-1")
        other = client.add_to_cart(SHOE, anonymous_id="a-2")
        explicit = client.track("review", anonymous_id="a-1", user_id="u-7")
        if isinstance(client, AsyncClient):
            await client.aclose()
        else:
            client.close()
        assert client.stats.accepted == 5
        events = {e["event_id"]: e for e in gateway.transport.events()}

    def ids(event_id: object) -> tuple[str | None, str | None]:
        event = events[str(event_id)]
        return event.get("anonymous_id"), event.get("user_id")

    assert events[str(linked)]["event_type"] == "identify"
    assert events[str(linked)]["properties"] == {"plan": "gold"}
    assert ids(linked) == ("a-1", "u-42")
    assert ids(before) == ("a-1", None)
    assert ids(after) == ("a-1", "u-42")
    assert ids(other) == ("a-2", None)
    assert ids(explicit) == ("a-1", "u-7")  # an explicit user id wins


def test_identify_needs_both_ids() -> None:
    with Client("key", url="http://127.0.0.1:9") as client:
        with pytest.raises(ValueError, match="`user_id` must not be empty"):
            client.identify("", anonymous_id="a-1")
        with pytest.raises(ValueError, match="`anonymous_id` must not be empty"):
            client.identify("u-1", anonymous_id="")
