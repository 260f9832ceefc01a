"""Enrichment from user agents and URLs, and sessionization (pure functions, no servers)."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from processor_testing import BASE_TIME, GOOGLEBOT, IPHONE, WINDOWS_CHROME, event, group

from clickstream_contract.event import Event
from processor import sessions
from processor.enrich import enrich, parse_agent, referrer_class
from processor.records import EnrichedEvent

IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/124.0 Safari/537.36"
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)


def enriched(**fields: object) -> EnrichedEvent:
    body = event(fields.pop("event_type", "page_view"), **fields)  # type: ignore[arg-type]
    decoded = msgspec.json.decode(msgspec.json.encode(body), type=Event)
    return enrich(decoded, group([]))


@pytest.mark.parametrize(
    ("user_agent", "device_type", "browser", "os", "is_bot"),
    [
        (WINDOWS_CHROME, "desktop", "Chrome", "Windows", False),
        (MAC_SAFARI, "desktop", "Safari", "Mac OS X", False),
        (IPHONE, "mobile", "Mobile Safari", "iOS", False),
        (ANDROID_PHONE, "mobile", "Chrome", "Android", False),
        (IPAD, "tablet", "Mobile Safari", "iOS", False),
        (ANDROID_TABLET, "tablet", "Chrome", "Android", False),
        (GOOGLEBOT, "bot", "Googlebot", None, True),
        ("python-requests/2.31", "bot", "Python Requests", None, True),
        (HEADLESS, "bot", "HeadlessChrome", "Linux", True),
        ("SomethingUnknown/1.0", "other", None, None, False),
    ],
)  # fmt: skip
def test_user_agents(
    user_agent: str, device_type: str, browser: str | None, os: str | None, is_bot: bool
) -> None:
    agent = parse_agent(user_agent)
    assert agent.device_type == device_type
    assert agent.is_bot is is_bot
    assert agent.browser == browser
    assert agent.os == os


@pytest.mark.parametrize(
    ("referrer", "utm_medium", "expected"),
    [
        (None, None, "direct"),
        ("https://shop.example/cart", None, "internal"),
        ("https://www.google.co.uk/search?q=x", None, "search"),
        ("https://duckduckgo.com/", None, "search"),
        ("https://l.facebook.com/l.php?u=x", None, "social"),
        ("https://t.co/abc", None, "social"),
        ("https://mail.google.com/mail/u/0", None, "email"),
        ("https://blog.example.org/post", None, "other"),
        ("https://www.google.com/", "cpc", "paid"),
        (None, "PPC", "paid"),
        (None, "email", "email"),
        ("not a url at all", None, "other"),
    ],
)
def test_referrer_classes(referrer: str | None, utm_medium: str | None, expected: str) -> None:
    assert referrer_class(referrer, "shop.example", utm_medium) == expected


def test_campaign_from_page_url_and_path() -> None:
    row = enriched(
        page={"url": "https://shop.example/a/b?utm_source=fb&utm_medium=social&utm_campaign=spring"
              "&utm_term=mugs&utm_content=v2&x=1", "referrer": "https://shop.example/"},
    )  # fmt: skip
    assert row.page_path == "/a/b"
    utm = (row.utm_source, row.utm_medium, row.utm_campaign, row.utm_term, row.utm_content)
    assert utm == ("fb", "social", "spring", "mugs", "v2")
    assert row.referrer_class == "internal"


def test_context_campaign_wins_over_the_url() -> None:
    row = enriched(
        page={"url": "https://shop.example/?utm_source=url"},
        context={"campaign": {"source": "ctx", "medium": "cpc", "name": "launch"}},
    )
    assert (row.utm_source, row.utm_medium, row.utm_campaign) == ("ctx", "cpc", "launch")
    assert row.referrer_class == "paid"


def test_visitor_key_and_device_hints() -> None:
    known = enriched(user_id="u-7", anonymous_id="a-7")
    assert known.visitor_key == "u-7"
    assert enriched(anonymous_id="a-8").visitor_key == "a-8"
    app = enriched(context={"user_agent": WINDOWS_CHROME, "device": {"type": "tv"}})
    assert (app.device_type, app.browser) == ("tv", "Chrome")
    # Without a user agent in the event, the request's (stamped by the gateway) is used.
    assert enriched().browser == "Chrome"


def test_order_items_and_properties_travel_as_json() -> None:
    row = enriched(event_type="purchase", properties={"coupon": "X1"})
    assert msgspec.json.decode(row.order_items or "") == [
        {"product_id": "sku-1", "price": 9.5, "quantity": 2}
    ]
    assert row.revenue == 19.0 and row.currency == "EUR"
    assert msgspec.json.decode(row.properties or "") == {"coupon": "X1"}


def at(minutes: float, anonymous_id: str = "a", session_id: str | None = None) -> EnrichedEvent:
    fields: dict[str, object] = {"at": BASE_TIME + timedelta(minutes=minutes)}
    if session_id:
        fields["session_id"] = session_id
    return enriched(anonymous_id=anonymous_id, **fields)


def test_sessions_split_at_30_minutes_of_inactivity() -> None:
    events = [at(m) for m in (0, 30, 60, 91, 92)]  # gaps 30, 30, 31, 1
    state = sessions.assign(events[::-1], {})  # arrival order does not matter
    ids = [e.session_id for e in events]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4]
    assert ids[0] == sessions.session_id_for("a", BASE_TIME)
    assert state == {"a": sessions.OpenSession(ids[3], BASE_TIME + timedelta(minutes=92))}


def test_sessions_continue_from_state_and_are_deterministic() -> None:
    first = [at(0), at(10)]
    state = sessions.assign(first, {})
    later = [at(25), at(80)]
    sessions.assign(later, state)
    assert later[0].session_id == first[0].session_id != later[1].session_id
    again = [at(25), at(80)]
    sessions.assign(again, state)
    assert [e.session_id for e in again] == [e.session_id for e in later]


def test_late_events_do_not_reopen_the_current_session() -> None:
    state = sessions.assign([at(100)], {})
    late = [at(0), at(5)]  # an offline phone's events, much older than the open session
    after = sessions.assign(late, state)
    assert late[0].session_id == late[1].session_id != state["a"].session_id
    assert after == state


def test_client_session_ids_and_visitors_without_anonymous_id() -> None:
    mine = at(0, session_id="client-1")
    known = enriched(anonymous_id=None, user_id="u-1")
    state = sessions.assign([mine, known], {})
    assert mine.session_id == "client-1"
    assert known.session_id == sessions.session_id_for("u-1", BASE_TIME)
    assert set(state) == {"u-1"}
