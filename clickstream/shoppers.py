"""Simulated shoppers for the load generator: a shop, its visitors and their sessions.

A seeded `Shop` has a product catalog (categories, names, prices, popularity), a pool of
visitors (devices with real-looking user agents, locales, some with accounts) and traffic
sources (search engines, social networks, e-mail campaigns, paid search, affiliates, direct).
`Shop.session()` plays one visit as a sequence of contract events built with the SDK's
builders: land, browse, search, view products, add to and remove from the cart, drop off or
check out, log in, purchase. `Traffic` interleaves many concurrent sessions into one stream
and, when asked, slips in a share of invalid events.

The rates below are rough e-commerce figures (about 40% bounce, 2-3% of sessions buy).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote_plus, urlencode

import msgspec

from clickstream_contract.event import Campaign, Context, Device, Event, Page, Product
from clickstream_sdk.events import (
    build_event,
    checkout_properties,
    order_of,
    search_properties,
)

SHOP_URL: Final = "https://shop.example.com"
CURRENCY: Final = "EUR"

BOUNCE_RATE: Final = 0.40
CONTINUE_RATE: Final = 0.82  # after each step, the visitor goes on with this probability
ADD_TO_CART_RATE: Final = 0.18  # after a product view
REMOVE_FROM_CART_RATE: Final = 0.06  # per step, with a non-empty cart
CHECKOUT_RATE: Final = 0.22  # per step, with a non-empty cart
PURCHASE_RATE: Final = 0.62  # of checkouts begun
RETURNING_RATE: Final = 0.35  # of sessions, by a visitor seen before
ACCOUNT_RATE: Final = 0.45  # of visitors that have (or make) an account
BOT_RATE: Final = 0.02
MAX_STEPS: Final = 40

# category: (product nouns, adjectives, price range in EUR)
CATEGORIES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[float, float]]]] = {
    "Electronics": (
        (
            "Headphones",
            "Smartwatch",
            "Bluetooth Speaker",
            "Charger",
            "E-Reader",
            "Webcam",
            "Keyboard",
            "Mouse",
        ),
        ("Wireless", "Pro", "Compact", "Noise-Cancelling"),
        (15.0, 450.0),
    ),
    "Books": (
        ("Cookbook", "Novel", "Travel Guide", "Biography", "Poetry Collection"),
        ("Illustrated", "Paperback", "Hardcover", "Signed"),
        (8.0, 45.0),
    ),
    "Home & Kitchen": (
        ("Chef's Knife", "Coffee Grinder", "Dutch Oven", "Linen Sheets", "Lamp", "Cutting Board"),
        ("Cast-Iron", "Oak", "Ceramic", "Minimalist"),
        (12.0, 220.0),
    ),
    "Fashion": (
        ("Sneakers", "Rain Jacket", "Wool Sweater", "Jeans", "Leather Belt", "Scarf"),
        ("Organic", "Slim-Fit", "Vintage", "Waterproof"),
        (19.0, 180.0),
    ),
    "Sports": (
        ("Yoga Mat", "Trail Shoes", "Water Bottle", "Cycling Gloves", "Tent"),
        ("Lightweight", "Insulated", "Recycled", "Ultralight"),
        (9.0, 320.0),
    ),
    "Beauty": (
        ("Face Serum", "Shampoo", "Lip Balm", "Sunscreen", "Perfume"),
        ("Vegan", "Fragrance-Free", "Travel-Size", "Hydrating"),
        (6.0, 95.0),
    ),
    "Toys": (
        ("Puzzle", "Building Blocks", "Plush Bear", "Board Game", "Kite"),
        ("Wooden", "1000-Piece", "Classic", "Family"),
        (7.0, 70.0),
    ),
}

SEARCH_TERMS: Final = (
    "headphones",
    "running shoes",
    "gift for dad",
    "coffee",
    "yoga",
    "waterproof jacket",
    "board game",
    "serum",
    "tent 2 person",
    "usb-c",
)

# (device type, share, user agents)
DEVICES: Final[tuple[tuple[str, float, tuple[str, ...]], ...]] = (
    (
        "desktop",
        0.42,
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.4 Safari/605.1.15",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/123.0.0.0 Safari/537.36",
        ),
    ),
    (
        "mobile",
        0.48,
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.6367.82 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
            "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
        ),
    ),
    (
        "tablet",
        0.10,
        (
            "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/124.0.0.0 Safari/537.36",
        ),
    ),
)
BOT_AGENTS: Final = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)
LOCALES: Final = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "nl-NL", "it-IT")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a visit comes from: the referrer and the UTM parameters of the landing URL."""

    referrer: str | None
    campaign: Campaign | None
    landing: str  # home, category, product, search, sale


def _utm(source: str, medium: str, name: str, term: str | None = None) -> Campaign:
    return Campaign(source=source, medium=medium, name=name, term=term)


# (share, a function of the rng that picks a concrete source)
SOURCES: Final[tuple[tuple[float, Callable[[random.Random], Source]], ...]] = (
    (0.27, lambda r: Source(None, None, "home")),
    (
        0.28,
        lambda r: Source(
            r.choices(
                ("https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/"),
                (0.8, 0.12, 0.08),
            )[0],
            None,
            r.choice(("product", "category", "home")),
        ),
    ),
    (
        0.08,
        lambda r: Source(
            "https://www.google.com/",
            _utm("google", "cpc", r.choice(("brand", "shopping_generic")), r.choice(SEARCH_TERMS)),
            "product",
        ),
    ),
    (
        0.14,
        lambda r: Source(
            r.choice(
                (
                    "https://l.facebook.com/",
                    "https://www.instagram.com/",
                    "https://t.co/",
                    "https://www.pinterest.com/",
                    "https://www.tiktok.com/",
                )
            ),
            r.choice(
                (
                    None,
                    _utm("instagram", "social", "spring_sale"),
                    _utm("facebook", "paid_social", "retargeting"),
                )
            ),
            r.choice(("product", "sale")),
        ),
    ),
    (
        0.15,
        lambda r: Source(
            None,
            _utm(
                "newsletter", "email", r.choice(("weekly_digest", "abandoned_cart", "spring_sale"))
            ),
            "sale",
        ),
    ),
    (
        0.08,
        lambda r: Source(
            r.choice(("https://www.gearblog.example/best-of-2024", "https://deals.example.org/")),
            r.choice((None, _utm("gearblog", "affiliate", "partners"))),
            "product",
        ),
    ),
)


@dataclass(slots=True)
class Visitor:
    anonymous_id: str
    device_type: str
    user_agent: str
    locale: str
    account: str | None  # user_id once they have logged in at least once
    has_account: bool
    visits: int = 0


@dataclass(slots=True)
class Catalog:
    products: list[Product]
    weights: list[float]  # popularity, Zipf-like
    by_category: dict[str, list[Product]] = field(default_factory=dict)

    @classmethod
    def generate(cls, rng: random.Random, size: int = 240) -> Catalog:
        products: list[Product] = []
        for n in range(size):
            category = list(CATEGORIES)[n % len(CATEGORIES)]
            nouns, adjectives, (low, high) = CATEGORIES[category]
            name = f"{rng.choice(adjectives)} {rng.choice(nouns)}"
            # Prices cluster at the low end of the range and end in .99 / .49 / .00.
            price = low + (high - low) * rng.random() ** 2.2
            price = float(int(price)) + rng.choice((0.99, 0.49, 0.0))
            pid = f"P{10_000 + n}"
            products.append(
                Product(
                    product_id=pid,
                    sku=f"SKU-{pid[1:]}-{n % 5}",
                    name=name,
                    category=category,
                    price=price,
                    currency=CURRENCY,
                )
            )
        order = list(range(size))
        rng.shuffle(order)
        weights = [0.0] * size
        for rank, index in enumerate(order):
            weights[index] = 1.0 / (rank + 1) ** 0.9
        by_category: dict[str, list[Product]] = {}
        for product in products:
            by_category.setdefault(product.category or "", []).append(product)
        return cls(products, weights, by_category)

    def pick(self, rng: random.Random, category: str | None = None) -> Product:
        if category is not None:
            return rng.choice(self.by_category[category])
        return rng.choices(self.products, self.weights)[0]


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def product_url(product: Product) -> str:
    return f"{SHOP_URL}/p/{slug(product.name or '')}-{product.product_id.lower()}"


UTM_PARAMETERS: Final = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}


def with_utm(url: str, campaign: Campaign | None) -> str:
    if campaign is None:
        return url
    fields = msgspec.structs.asdict(campaign)
    params = {utm: fields[name] for name, utm in UTM_PARAMETERS.items() if fields[name]}
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Shop:
    def __init__(self, rng: random.Random, catalog_size: int = 240, max_visitors: int = 20_000):
        self.rng = rng
        self.catalog = Catalog.generate(rng, catalog_size)
        self.visitors: list[Visitor] = []
        self.max_visitors = max_visitors
        self.orders = 0

    def visitor(self) -> Visitor:
        rng = self.rng
        if self.visitors and rng.random() < RETURNING_RATE:
            visitor = rng.choice(self.visitors)
        else:
            device_type, _, agents = rng.choices(DEVICES, [d[1] for d in DEVICES])[0]
            visitor = Visitor(
                anonymous_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                device_type=device_type,
                user_agent=rng.choice(agents),
                locale=rng.choice(LOCALES),
                account=None,
                has_account=rng.random() < ACCOUNT_RATE,
            )
            if len(self.visitors) < self.max_visitors:
                self.visitors.append(visitor)
        visitor.visits += 1
        return visitor

    def session(self, clock: Clock = utc_now) -> Iterator[Event]:
        """One visit, event by event; `occurred_at` is `clock()` when each event is produced."""
        if self.rng.random() < BOT_RATE:
            return self._bot_session(clock)
        return self._shopper_session(clock)

    def _bot_session(self, clock: Clock) -> Iterator[Event]:
        rng = self.rng
        context = Context(user_agent=rng.choice(BOT_AGENTS))
        anonymous_id = f"bot-{rng.getrandbits(48):012x}"
        session_id = f"s-{rng.getrandbits(64):016x}"
        for _ in range(rng.randint(5, 25)):
            product = self.catalog.pick(rng)
            page = Page(url=product_url(product), title=product.name)
            yield build_event(
                "page_view",
                anonymous_id=anonymous_id,
                session_id=session_id,
                page=page,
                context=context,
                occurred_at=clock(),
            )

    def _shopper_session(self, clock: Clock) -> Iterator[Event]:
        rng, catalog = self.rng, self.catalog
        visitor = self.visitor()
        source = rng.choices([s[1] for s in SOURCES], [s[0] for s in SOURCES])[0](rng)
        context = Context(
            user_agent=visitor.user_agent,
            locale=visitor.locale,
            device=Device(type=visitor.device_type),  # type: ignore[arg-type]
            campaign=source.campaign,
        )
        session_id = f"s-{rng.getrandbits(64):016x}"
        # Returning customers are often still logged in ("remember me").
        user_id = visitor.account if visitor.account and rng.random() < 0.6 else None
        cart: dict[str, Product] = {}
        referrer = source.referrer

        def event(event_type: str, url: str, title: str, **fields: Any) -> Event:
            nonlocal referrer
            page = Page(url=url, title=f"{title} | Example Shop", referrer=referrer)
            referrer = url.split("?")[0]
            return build_event(
                event_type,
                anonymous_id=visitor.anonymous_id,
                user_id=user_id,
                session_id=session_id,
                page=page,
                context=context,
                occurred_at=clock(),
                **fields,
            )

        def view(product: Product) -> Iterator[Event]:
            url = product_url(product)
            yield event("page_view", landing_url(url), product.name or "")
            yield event("product_view", url, product.name or "", product=product)

        def log_in(user: str) -> bool:
            """Sign in; whether the visitor was signed out (then the tracker identifies)."""
            nonlocal user_id
            signed_out, user_id = user_id != user, user
            return signed_out

        first_page = True

        def landing_url(url: str) -> str:
            nonlocal first_page
            if first_page:
                first_page = False
                return with_utm(url, source.campaign)
            return url

        # Landing
        if source.landing == "product":
            yield from view(catalog.pick(rng))
        elif source.landing == "category":
            category = rng.choice(list(CATEGORIES))
            yield event("page_view", landing_url(f"{SHOP_URL}/c/{slug(category)}"), category)
        elif source.landing == "sale":
            yield event("page_view", landing_url(f"{SHOP_URL}/sale/spring"), "Spring sale")
        else:
            yield event("page_view", landing_url(f"{SHOP_URL}/"), "Example Shop")
        if rng.random() < BOUNCE_RATE:
            return

        for _ in range(MAX_STEPS):
            roll = rng.random()
            if cart and roll < CHECKOUT_RATE:
                yield from self._checkout(event, visitor, cart, log_in)
                return
            if cart and roll < CHECKOUT_RATE + REMOVE_FROM_CART_RATE:
                product = cart.pop(rng.choice(list(cart)))
                yield event("remove_from_cart", f"{SHOP_URL}/cart", "Cart", product=product)
            elif roll < 0.45:
                product = catalog.pick(rng)
                yield from view(product)
                if rng.random() < ADD_TO_CART_RATE + (0.08 if visitor.visits > 1 else 0):
                    quantity = rng.choices((1, 2, 3), (0.85, 0.12, 0.03))[0]
                    line = msgspec.structs.replace(product, quantity=quantity)
                    if product.product_id in cart:
                        line = msgspec.structs.replace(
                            line, quantity=cart[product.product_id].quantity + quantity
                        )
                    cart[product.product_id] = line
                    yield event(
                        "add_to_cart",
                        product_url(product),
                        product.name or "",
                        product=msgspec.structs.replace(product, quantity=quantity),
                    )
            elif roll < 0.70:
                category = rng.choice(list(CATEGORIES))
                yield event("page_view", f"{SHOP_URL}/c/{slug(category)}", category)
            elif roll < 0.88:
                term = rng.choice(SEARCH_TERMS)
                url = f"{SHOP_URL}/search?q={quote_plus(term)}"
                yield event(
                    "search",
                    url,
                    f"Search: {term}",
                    properties=search_properties(term, rng.randint(0, 60)),
                )
            elif roll < 0.90:
                yield event(
                    "newsletter_signup",
                    f"{SHOP_URL}/",
                    "Example Shop",
                    properties={"list": "weekly_digest"},
                )
            else:
                yield event("page_view", f"{SHOP_URL}/", "Example Shop")
            if rng.random() > CONTINUE_RATE:
                return

    def _checkout(
        self,
        event: Callable[..., Event],
        visitor: Visitor,
        cart: dict[str, Product],
        login: Callable[[str], bool],
    ) -> Iterator[Event]:
        rng = self.rng
        items = list(cart.values())
        yield event(
            "begin_checkout",
            f"{SHOP_URL}/checkout",
            "Checkout",
            properties=checkout_properties(items, CURRENCY),
        )
        if rng.random() >= PURCHASE_RATE:
            return  # abandoned checkout
        if visitor.has_account:
            visitor.account = visitor.account or f"u-{rng.getrandbits(40):010x}"
            if login(visitor.account):
                # As a tracker does on sign-in: links this device's anonymous id to the user.
                yield event("identify", f"{SHOP_URL}/account/login", "Sign in")
        self.orders += 1
        order = order_of(f"O-{rng.getrandbits(48):012X}", items, CURRENCY)
        yield event("purchase", f"{SHOP_URL}/checkout/complete", "Thank you", order=order)


@dataclass(frozen=True, slots=True)
class Generated:
    """One request payload item: the encoded event and what the generator knows about it."""

    event_id: str
    data: bytes
    valid: bool


_encoder = msgspec.json.Encoder()


def _corrupt(rng: random.Random, event: Event) -> dict[str, Any]:
    """A plausible client bug: each breaks exactly one rule of the contract."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    kind = rng.randrange(7)
    if kind == 0:
        data.pop("anonymous_id", None)
        data.pop("user_id", None)
    elif kind == 1:
        data["event_type"] = "Add To Cart"
    elif kind == 2:
        data["eventType"] = data["event_type"]  # unknown field: a typo'd name
    elif kind == 3:
        data["occurred_at"] = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    elif kind == 4:
        data["event_type"], data["product"] = "add_to_cart", None
    elif kind == 5:
        data["context"] = {**data.get("context", {}), "locale": "english please"}
    else:
        data["product"] = {"product_id": "P1", "price": -3, "currency": "EUR"}
        data["event_type"] = "product_view"
    return data


class Traffic:
    """An endless stream of events from `concurrent` sessions in progress at once."""

    def __init__(
        self,
        seed: int | None = None,
        *,
        invalid_share: float = 0.0,
        concurrent: int = 64,
        clock: Clock = utc_now,
    ) -> None:
        if not 0 <= invalid_share < 1:
            raise ValueError("invalid_share must be in [0, 1)")
        self.rng = random.Random(seed)
        self.shop = Shop(self.rng)
        self.invalid_share = invalid_share
        self.clock = clock
        self.sessions = [self.shop.session(clock) for _ in range(concurrent)]
        self._held: Event | None = None  # the real event behind a slipped-in invalid one

    def __iter__(self) -> Iterator[Generated]:
        return self

    def __next__(self) -> Generated:
        rng = self.rng
        if self._held is not None:
            held, self._held = self._held, None
            return Generated(str(held.event_id), _encoder.encode(held), valid=True)
        slot = rng.randrange(len(self.sessions))
        while (event := next(self.sessions[slot], None)) is None:
            self.sessions[slot] = self.shop.session(self.clock)
        if self.invalid_share and rng.random() < self.invalid_share:
            # Slipped in before the real event, so the sessions themselves stay coherent.
            self._held = event
            bad = _corrupt(rng, msgspec.structs.replace(event, event_id=uuid.uuid4()))
            return Generated(str(bad["event_id"]), _encoder.encode(bad), valid=False)
        return Generated(str(event.event_id), _encoder.encode(event), valid=True)
