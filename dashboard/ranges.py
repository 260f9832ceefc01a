"""The time range a view covers, from its URL query, and how to read it from the rollups.

Ranges are half-open [start, end) in UTC and aligned to whole minutes; a preset ends after the
current minute, so the newest data is always in view. Each range picks a chart bucket so a
chart has between 15 and ~170 points, and `cover` splits it into the largest aligned pieces
(days, hours, minutes) so queries read the coarsest table that is exact for each piece.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

PRESETS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": HOUR,
    "24h": DAY,
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_PRESET = "24h"
MAX_SPAN = timedelta(days=92)


class RangeError(ValueError):
    """A range query parameter that cannot be used; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime
    name: str  # a preset name or "custom"
    # When the range was asked for: a range that reaches past it is still filling up.
    read_at: datetime | None = None

    @property
    def until(self) -> datetime:
        """The end of what the range can hold so far: its end, or the time it was read at
        while it is still running. Chart buckets past it are incomplete, not a drop."""
        return min(self.end, self.read_at) if self.read_at else self.end

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def bucket(self) -> timedelta:
        return bucket_for(self.span)

    @property
    def previous(self) -> TimeRange:
        """The period of the same length just before, for "change vs previous period"."""
        return TimeRange(self.start - self.span, self.start, self.name)

    def buckets(self) -> list[datetime]:
        """Start of every chart bucket that overlaps the range, oldest first."""
        step = self.bucket
        first = floor(self.start, step)
        return [first + i * step for i in range(math.ceil((self.end - first) / step))]


def bucket_for(span: timedelta) -> timedelta:
    if span <= timedelta(hours=3):
        return MINUTE
    if span <= timedelta(days=2):
        return timedelta(minutes=15)
    if span <= timedelta(days=14):
        return HOUR
    return DAY


def floor(moment: datetime, unit: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // unit) * unit


def ceil(moment: datetime, unit: timedelta) -> datetime:
    down = floor(moment, unit)
    return down if down == moment else down + unit


def parse_time(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"{name}: {value!r} is not an ISO 8601 time (2024-05-01T12:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the dashboard shows UTC everywhere
    return floor(moment.astimezone(UTC), MINUTE)


def parse_range(query: Mapping[str, str], now: datetime) -> TimeRange:
    """`?range=24h`, or `?range=custom&from=...&to=...` (ISO 8601, UTC when no offset)."""
    name = query.get("range") or DEFAULT_PRESET
    if name in PRESETS:
        end = floor(now, MINUTE) + MINUTE
        return TimeRange(end - PRESETS[name], end, name, now)
    if name != "custom":
        choices = ", ".join([*PRESETS, "custom"])
        raise RangeError(f"range: {name!r} is not one of {choices}")
    if not query.get("from") or not query.get("to"):
        raise RangeError("from/to: a custom range needs both `from` and `to`")
    start = parse_time("from", query["from"])
    end = parse_time("to", query["to"])
    if end <= start:
        raise RangeError("to: must be at least a minute after `from`")
    if end - start > MAX_SPAN:
        raise RangeError(f"from/to: a range may span at most {MAX_SPAN.days} days")
    return TimeRange(start, end, "custom", now)


Piece = tuple[timedelta, datetime, datetime]


def cover(start: datetime, end: datetime, units: Sequence[timedelta]) -> list[Piece]:
    """Split [start, end) into aligned pieces of the given units, coarsest first where it fits.

    The last unit must divide every boundary (ranges are minute-aligned, so MINUTE does).
    """
    if start >= end:
        return []
    unit, finer = units[0], units[1:]
    if not finer:
        return [(unit, start, end)]
    inner_start, inner_end = ceil(start, unit), floor(end, unit)
    if inner_start >= inner_end:
        return cover(start, end, finer)
    return [
        *cover(start, inner_start, finer),
        (unit, inner_start, inner_end),
        *cover(inner_end, end, finer),
    ]
