"""The load generator: coherent simulated shoppers, and a correct ids file against a server.

Sessions are checked as a whole: every event valid under the contract decoder, carts rebuilt
from add/remove events equal the purchased items, revenue equals the items' sum. The runs go
to the real gateway (tests/gateway_testing.py) over HTTP on loopback.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from gateway_testing import MemoryTransport, serving

from clickstream.loadgen import Options, generate
from clickstream.shoppers import BOT_AGENTS, Shop, Traffic
from clickstream_contract.event import Event
from clickstream_sdk.delivery import Backoff
from gateway.settings import GatewaySettings

decoder = msgspec.json.Decoder(Event)
encoder = msgspec.json.Encoder()


@pytest.fixture(scope="module")
def sessions() -> list[list[Event]]:
    shop = Shop(random.Random(7))
    # Through JSON and the contract decoder: what the gateway would accept.
    return [[decoder.decode(encoder.encode(e)) for e in shop.session()] for _ in range(4000)]


def test_sessions_are_coherent_shopping_journeys(sessions: list[list[Event]]) -> None:
    for events in sessions:
        assert len({e.session_id for e in events}) == 1
        assert len({e.anonymous_id for e in events}) == 1
        users = [e.user_id for e in events if e.user_id]
        assert len(set(users)) <= 1, "one customer per session"
        cart: dict[str, int] = {}
        checkout_value = None
        for e in events:
            if e.event_type == "add_to_cart":
                assert e.product is not None
                cart[e.product.product_id] = cart.get(e.product.product_id, 0) + e.product.quantity
            elif e.event_type == "remove_from_cart":
                assert e.product is not None and e.product.product_id in cart
                del cart[e.product.product_id]
            elif e.event_type == "begin_checkout":
                assert cart, "checkout with an empty cart"
                assert e.properties is not None
                checkout_value = e.properties["value"]
            elif e.event_type == "identify":
                assert e.user_id and e.anonymous_id, "a sign-in links both ids"
                assert events[events.index(e) - 1].user_id is None, "only when signed out"
            elif e.event_type == "purchase":
                assert e.order is not None and checkout_value is not None
                items = {i.product_id: i.quantity for i in e.order.items}
                assert items == cart, "the order is exactly the cart"
                revenue = round(sum((i.price or 0) * i.quantity for i in e.order.items), 2)
                assert e.order.revenue == revenue == checkout_value
                assert e is events[-1], "a purchase ends the session"


def test_the_traffic_looks_like_a_shop(sessions: list[list[Event]]) -> None:
    n = len(sessions)
    types = Counter(e.event_type for s in sessions for e in s)
    purchases = sum(1 for s in sessions if s[-1].event_type == "purchase")
    bounces = sum(1 for s in sessions if len(s) <= 2 and s[-1].event_type != "purchase")
    assert 0.01 < purchases / n < 0.10
    assert 0.25 < bounces / n < 0.55
    assert types["product_view"] > types["add_to_cart"] > types["purchase"] > 0
    assert types["search"] and types["remove_from_cart"] and types["newsletter_signup"]
    first = [s[0] for s in sessions]
    devices = Counter(e.context.device.type for e in first if e.context and e.context.device)
    assert set(devices) == {"desktop", "mobile", "tablet"}
    assert any(e.context and e.context.user_agent in BOT_AGENTS for e in first)
    # Campaign landings carry the same UTM parameters in the URL and in context.campaign.
    campaigns = [e for e in first if e.context and e.context.campaign]
    assert len(campaigns) > n * 0.1
    for e in campaigns:
        assert e.page is not None and e.page.url is not None
        campaign = e.context.campaign if e.context else None
        assert campaign is not None
        query = parse_qs(urlsplit(e.page.url).query)
        assert query["utm_source"] == [campaign.source]
        assert query["utm_medium"] == [campaign.medium]
    referrers = {urlsplit(e.page.referrer).hostname for e in first if e.page and e.page.referrer}
    assert {"www.google.com", "l.facebook.com"} <= referrers
    # Returning customers: visitors with several sessions, some of them logged in.
    visits = Counter(s[0].anonymous_id for s in sessions)
    assert sum(1 for v in visits.values() if v > 1) > n * 0.05
    assert any(e.user_id for s in sessions for e in s)
    assert types["identify"] > 0


def test_invalid_share_is_honoured_and_every_other_event_is_valid() -> None:
    traffic = Traffic(3, invalid_share=0.02)
    items = list(itertools.islice(traffic, 20_000))
    invalid = [g for g in items if not g.valid]
    assert 0.015 < len(invalid) / len(items) < 0.025
    for g in items:
        if g.valid:
            assert str(decoder.decode(g.data).event_id) == g.event_id
        else:
            with pytest.raises(msgspec.ValidationError):
                decoder.decode(g.data)


@pytest.mark.parametrize(("batch_size", "count"), [(1, 600), (25, 1500)])
async def test_ids_file_lists_exactly_the_accepted_events(
    tmp_path: Path, batch_size: int, count: int
) -> None:
    ids_file = tmp_path / "ids.txt"
    # One request per Pub/Sub message: the three failed publishes are three requests' 503s.
    limits = GatewaySettings(retry_after_s=0, rpc_max_groups=1)
    with serving(limits, MemoryTransport(fail_next=3)) as gateway:
        options = Options(
            url=gateway.url,
            write_key=gateway.write_key,
            count=count,
            batch_size=batch_size,
            concurrency=8,
            ids_file=ids_file,
            seed=5,
            invalid_share=0.05,
            backoff=Backoff(base=0.01, cap=0.1),
        )
        tally = await generate(options, progress=None)
        accepted = gateway.transport.published_counts()
    written = ids_file.read_text().split()
    assert len(written) == len(set(written)), "an id written twice"
    assert set(written) == set(accepted)
    assert tally.sent == count and tally.failed == 0
    assert tally.accepted == len(written) and tally.rejected == tally.invalid_sent > 0
    assert tally.retries == 3 and tally.statuses["503"] == 3


async def test_a_refused_write_key_stops_the_run() -> None:
    with serving() as gateway:
        options = Options(url=gateway.url, write_key="wrong", count=10_000, concurrency=2)
        tally = await generate(options, progress=None)
    assert tally.aborted and "401" in tally.aborted
    assert tally.sent < 10_000 and tally.accepted == 0


async def test_rate_paces_the_requests() -> None:
    with serving() as gateway:
        options = Options(
            url=gateway.url, write_key=gateway.write_key, rate=200, count=100, batch_size=10
        )
        tally = await generate(options, progress=None)
        requests = gateway.ingest_requests()
    assert tally.accepted == 100
    # 10 requests due every 50 ms: the last is due 450 ms after the first (open loop).
    assert requests[-1].at - requests[0].at >= 0.4
