"""Enrichment: one validated `Event` plus its server stamps -> one flat `EnrichedEvent`.

Everything here is a pure function of its inputs (sessions are assigned separately, see
`processor.sessions`), and the expensive parts are memoized: user agents and URLs repeat.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import msgspec
import ua_parser

from clickstream_contract.envelope import Group
from clickstream_contract.event import Event
from processor.records import EnrichedEvent

# Substrings of user agents of crawlers, monitors, headless browsers and HTTP libraries that
# ua-parser does not classify as "Spider".
_BOT_PATTERN: Final = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|headless|lighthouse|pingdom|uptimerobot|"
    r"python-requests|python-urllib|aiohttp|httpx|curl/|wget/|go-http-client|java/|okhttp|"
    r"scrapy|phantomjs|facebookexternalhit",
    re.IGNORECASE,
)
_TABLET_OS_FAMILIES: Final = frozenset({"iOS", "Android"})
_DESKTOP_OS_FAMILIES: Final = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Debian", "Chrome OS", "FreeBSD"}
)
_MOBILE_OS_FAMILIES: Final = frozenset(
    {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS"}
)

SEARCH_HOSTS: Final = (
    "google.", "bing.com", "yahoo.", "duckduckgo.com", "baidu.com", "yandex.", "ecosia.org",
    "qwant.com", "search.brave.com", "startpage.com", "naver.com", "seznam.cz",
)  # fmt: skip
SOCIAL_HOSTS: Final = (
    "facebook.com", "fb.com", "instagram.com", "t.co", "twitter.com", "x.com", "linkedin.com",
    "lnkd.in", "pinterest.", "reddit.com", "tiktok.com", "youtube.com", "youtu.be",
    "snapchat.com", "threads.net", "mastodon.", "bsky.app", "whatsapp.com", "telegram.org",
    "vk.com", "tumblr.com",
)  # fmt: skip
EMAIL_HOSTS: Final = (
    "mail.google.com", "outlook.live.com", "outlook.office.com", "mail.yahoo.com",
    "mail.proton.me", "webmail.", "mail.aol.com",
)  # fmt: skip
PAID_MEDIUMS: Final = frozenset({"cpc", "ppc", "paid", "paidsearch", "paid_search", "cpm"})
EMAIL_MEDIUMS: Final = frozenset({"email", "e-mail", "newsletter"})


class Agent(NamedTuple):
    device_type: str  # desktop, mobile, tablet, bot, other (or the client's own device.type)
    browser: str | None
    os: str | None
    is_bot: bool


# utm_source, utm_medium, utm_campaign, utm_term, utm_content
Utm = tuple[str | None, str | None, str | None, str | None, str | None]
_NO_UTM: Final[Utm] = (None, None, None, None, None)


class PageParts(NamedTuple):
    host: str | None
    path: str | None
    utm: Utm


@lru_cache(maxsize=16_384)
def parse_agent(user_agent: str) -> Agent:
    """Device type, browser and OS families, and the bot flag, from a user-agent string."""
    result = ua_parser.parser(user_agent, ua_parser.Domain.ALL)
    browser = result.user_agent.family if result.user_agent else None
    os_family = result.os.family if result.os else None
    device = result.device
    if (device is not None and device.family == "Spider") or _BOT_PATTERN.search(user_agent):
        return Agent("bot", browser, os_family, True)
    return Agent(_device_type(user_agent, os_family, device), browser, os_family, False)


def _device_type(user_agent: str, os_family: str | None, device: ua_parser.Device | None) -> str:
    family = device.family if device else ""
    brand = (device.brand or "") if device else ""
    if family == "iPad" or "Tablet" in brand or "Tablet" in user_agent:
        return "tablet"
    # Android tablets send no "Mobile" token (Google's guidance to browser vendors).
    if os_family == "Android" and "Mobile" not in user_agent:
        return "tablet"
    if os_family in _MOBILE_OS_FAMILIES or "Mobi" in user_agent:
        return "mobile"
    if os_family in _DESKTOP_OS_FAMILIES:
        return "desktop"
    return "other"


@lru_cache(maxsize=65_536)
def parse_page(url: str) -> PageParts:
    """Host, path and UTM parameters of a page URL; unparsable URLs yield what they can."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return PageParts(None, None, _NO_UTM)
    utm: Utm = _NO_UTM
    if "utm_" in parts.query:
        params = dict(parse_qsl(parts.query))
        utm = (
            params.get("utm_source"),
            params.get("utm_medium"),
            params.get("utm_campaign"),
            params.get("utm_term"),
            params.get("utm_content"),
        )
    return PageParts((parts.hostname or None), parts.path or "/", utm)


@lru_cache(maxsize=16_384)
def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def _matches(host: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.endswith("."):  # "google." matches google.com, www.google.co.uk
            if host.startswith(pattern) or f".{pattern}" in host:
                return True
        elif host == pattern or host.endswith(f".{pattern}"):
            return True
    return False


@lru_cache(maxsize=16_384)
def _class_of_host(referrer_host: str) -> str:
    if _matches(referrer_host, EMAIL_HOSTS):
        return "email"
    if _matches(referrer_host, SEARCH_HOSTS):
        return "search"
    if _matches(referrer_host, SOCIAL_HOSTS):
        return "social"
    return "other"


def referrer_class(referrer: str | None, page_host: str | None, utm_medium: str | None) -> str:
    """search, social, direct, internal (same host as the page), email, paid or other."""
    medium = utm_medium.lower() if utm_medium else None
    if medium in PAID_MEDIUMS:
        return "paid"
    if medium in EMAIL_MEDIUMS:
        return "email"
    if not referrer:
        return "direct"
    host = _host(referrer)
    if host is None:
        return "other"
    if page_host is not None and host == page_host:
        return "internal"
    return _class_of_host(host)


_json_encode = msgspec.json.Encoder().encode


def enrich(event: Event, group: Group) -> EnrichedEvent:
    """The flat row for one event; `session_id` is the client's, or "" until sessionized."""
    page, context, product, order = event.page, event.context, event.product, event.order
    page_url = page.url if page else None
    referrer = page.referrer if page else None
    parts = parse_page(page_url) if page_url else None

    campaign = context.campaign if context else None
    utm: Utm
    if campaign is not None:
        utm = (campaign.source, campaign.medium, campaign.name, campaign.term, campaign.content)
    else:
        utm = parts.utm if parts else _NO_UTM

    user_agent = (context.user_agent if context else None) or group.user_agent
    agent = parse_agent(user_agent) if user_agent else None
    device_type = agent.device_type if agent else "other"
    if context and context.device and context.device.type and not (agent and agent.is_bot):
        device_type = context.device.type  # apps know their device better than a UA does

    return EnrichedEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        occurred_at=event.occurred_at,
        received_at=group.received_at,
        source=group.source,
        visitor_key=event.user_id or event.anonymous_id or "",
        anonymous_id=event.anonymous_id,
        user_id=event.user_id,
        session_id=event.session_id or "",
        page_url=page_url,
        page_path=parts.path if parts else None,
        page_title=page.title if page else None,
        referrer=referrer,
        referrer_class=referrer_class(referrer, parts.host if parts else None, utm[1]),
        utm_source=utm[0],
        utm_medium=utm[1],
        utm_campaign=utm[2],
        utm_term=utm[3],
        utm_content=utm[4],
        user_agent=user_agent,
        device_type=device_type,
        browser=agent.browser if agent else None,
        os=agent.os if agent else None,
        is_bot=agent.is_bot if agent else False,
        client_ip=group.client_ip,
        locale=context.locale if context else None,
        product_id=product.product_id if product else None,
        product_name=product.name if product else None,
        category=product.category if product else None,
        price=product.price if product else None,
        quantity=product.quantity if product else None,
        currency=(order.currency if order else None) or (product.currency if product else None),
        order_id=order.order_id if order else None,
        revenue=order.revenue if order else None,
        order_items=_json_encode(order.items).decode() if order and order.items else None,
        properties=_json_encode(event.properties).decode() if event.properties else None,
    )
