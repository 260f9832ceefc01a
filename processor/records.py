"""The processor's unit of work: one event, validated, stamped and enriched, flat.

Both sinks read this shape: the PostgreSQL sink aggregates it (processor.postgres), and the
BigQuery `events` table's schema is derived from it, one column per field. Nested parts of the
contract that have no column (order items, properties) travel as JSON text.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import msgspec


class EnrichedEvent(msgspec.Struct, kw_only=True, gc=False):
    # gc=False: no field can hold a reference cycle, and untracked instances keep the batches a
    # worker holds out of every collection (benchmarks/processor_throughput.py, decode phase:
    # 48.5k -> 96.5k events/s per core).
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    received_at: datetime
    source: str
    visitor_key: str  # user_id when known, else anonymous_id
    anonymous_id: str | None
    user_id: str | None
    session_id: str
    page_url: str | None = None
    page_path: str | None = None
    page_title: str | None = None
    referrer: str | None = None
    referrer_class: str = "direct"  # search, social, direct, internal, email, paid, other
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    user_agent: str | None = None
    device_type: str = "other"  # desktop, mobile, tablet, bot, other
    browser: str | None = None
    os: str | None = None
    is_bot: bool = False
    client_ip: str | None = None
    locale: str | None = None
    product_id: str | None = None
    product_name: str | None = None
    category: str | None = None
    price: float | None = None
    quantity: int | None = None
    currency: str | None = None
    order_id: str | None = None
    revenue: float | None = None
    order_items: str | None = None  # JSON array of the order's products
    properties: str | None = None  # JSON object
    # A purchase's revenue in the deployment's reporting currency, set by the PostgreSQL sink
    # for the sinks after it (processor/currency.py); None when its currency has no rate.
    revenue_reporting: Decimal | None = None
    reporting_currency: str | None = None  # set on purchases: the currency of the line above


class BadEvent(msgspec.Struct, kw_only=True):
    """An event (or a whole message) that can never be processed, kept with its reason."""

    received_at: datetime
    source: str | None
    reason: str
    reason_class: str  # "validation" (refused at the gateway), "envelope", "processing", ...
    raw: bytes
    client_ip: str | None = None
    user_agent: str | None = None
    # Pub/Sub message id and position in it: a redelivered message adds no second row.
    message_key: str | None = None


class RefusedData(Exception):
    """A sink refused a batch for what it holds (a value no column can take, a row too large):
    writing it again can never succeed, so the message that holds it is set aside as a bad
    event (`processor.core`), unlike an outage, which is retried."""


def unique_events(events: list[EnrichedEvent]) -> list[EnrichedEvent]:
    """First occurrence of each event_id: a batch may hold one event twice (two messages)."""
    # Keyed by the UUID's int: UUID.__hash__ is Python code, ~1 us per event here.
    seen: dict[int, EnrichedEvent] = {}
    for event in events:
        seen.setdefault(event.event_id.int, event)
    return list(seen.values()) if len(seen) != len(events) else events
