"""How the customer list is asked for in a URL: search prefix, sort order, page size, page cursor.

Pages are keyset pages: a cursor names the last (or first) row shown by its sort value and
visitor key, so a page deep in the list costs what the first does, and paging forward never
shows a customer twice even while the list moves (sort values only grow: a customer with a new
visit or order moves ahead of the cursor). Cursors are opaque to the browser (base64url JSON)
and checked on the way back in.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

# Sort name in the URL -> customers column; every order is descending (newest, most valuable).
SORTS = {"last_seen": "last_seen_at", "lifetime_value": "lifetime_value", "orders": "orders"}
DEFAULT_SORT = "last_seen"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# The list's own query parameters, besides the range's (range, from, to).
PARAMETERS = ("q", "sort", "after", "before", "limit")

SortValue = datetime | Decimal | int


class ListError(ValueError):
    """A list query parameter that cannot be used; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A row's place in one sort order: the page goes on after it (or ends before it)."""

    value: SortValue
    visitor_key: str


@dataclass(frozen=True, slots=True)
class CustomerQuery:
    search: str  # an id prefix; empty lists the customers last seen in the range
    sort: str
    limit: int
    after: Cursor | None = None
    before: Cursor | None = None

    @property
    def column(self) -> str:
        return SORTS[self.sort]


def encode_cursor(sort: str, value: SortValue, visitor_key: str) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    raw = json.dumps([sort, text, visitor_key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(name: str, token: str, sort: str) -> Cursor:
    problem = ListError(f"{name}: not a page cursor of this list (sorted by {sort})")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor_sort, text, visitor_key = json.loads(raw)
        value: SortValue
        if cursor_sort == "last_seen":
            value = datetime.fromisoformat(text)
        elif cursor_sort == "lifetime_value":
            value = Decimal(text)
        else:
            value = int(text)
    except (binascii.Error, ValueError, TypeError, InvalidOperation):
        raise problem from None
    if cursor_sort != sort or not isinstance(visitor_key, str):
        raise problem
    return Cursor(value, visitor_key)


def parse_customer_query(query: Mapping[str, str]) -> CustomerQuery:
    """`?q=&sort=last_seen|lifetime_value|orders&limit=&after=|before=` into a CustomerQuery."""
    sort = query.get("sort") or DEFAULT_SORT
    if sort not in SORTS:
        raise ListError(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
    limit_text = query.get("limit") or str(DEFAULT_PAGE_SIZE)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE_SIZE:
        raise ListError(f"limit: {limit_text!r} is not a whole number from 1 to {MAX_PAGE_SIZE}")
    if query.get("after") and query.get("before"):
        raise ListError("after/before: a page follows one cursor, not both")
    return CustomerQuery(
        search=query.get("q", "").strip(),
        sort=sort,
        limit=int(limit_text),
        after=decode_cursor("after", query["after"], sort) if query.get("after") else None,
        before=decode_cursor("before", query["before"], sort) if query.get("before") else None,
    )
