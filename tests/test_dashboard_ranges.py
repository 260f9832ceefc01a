"""Time ranges from the URL and their split into day / hour / minute pieces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboard.ranges import DAY, HOUR, MINUTE, RangeError, cover, parse_range

NOW = datetime(2026, 5, 1, 12, 30, 30, tzinfo=UTC)


def test_presets_end_after_the_current_minute() -> None:
    r = parse_range({"range": "15m"}, NOW)
    assert (r.start, r.end) == (
        datetime(2026, 5, 1, 12, 16, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 31, tzinfo=UTC),
    )
    assert r.previous.end == r.start and r.previous.span == r.span
    assert parse_range({}, NOW).name == "24h"
    assert [parse_range({"range": n}, NOW).bucket for n in ("1h", "24h", "7d", "30d")] == [
        MINUTE,
        timedelta(minutes=15),
        HOUR,
        DAY,
    ]


def test_buckets_cover_the_range() -> None:
    r = parse_range({"range": "7d"}, NOW)
    buckets = r.buckets()
    assert buckets[0] == datetime(2026, 4, 24, 12, tzinfo=UTC)  # partial first hour
    assert buckets[-1] == datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert len(buckets) == 7 * 24 + 1
    assert len(parse_range({"range": "1h"}, NOW).buckets()) == 60


def test_a_range_holds_data_until_it_was_read() -> None:
    running = parse_range({"range": "24h"}, NOW)
    assert running.until == NOW  # buckets ending after NOW are still filling
    past = parse_range({"range": "custom", "from": "2026-04-01", "to": "2026-04-02"}, NOW)
    assert past.until == past.end
    assert running.previous.until == running.start


def test_custom_ranges() -> None:
    r = parse_range(
        {"range": "custom", "from": "2026-04-01T10:15:59", "to": "2026-04-02T00:00Z"}, NOW
    )
    assert r.start == datetime(2026, 4, 1, 10, 15, tzinfo=UTC)
    assert r.end == datetime(2026, 4, 2, tzinfo=UTC)
    shifted = parse_range(
        {"range": "custom", "from": "2026-04-01T12:00+02:00", "to": "2026-04-01T13:00+02:00"}, NOW
    )
    assert shifted.start == datetime(2026, 4, 1, 10, tzinfo=UTC)
    for query, field in [
        ({"range": "week"}, "range:"),
        ({"range": "custom", "from": "2026-04-01T00:00"}, "from/to:"),
        ({"range": "custom", "from": "soon", "to": "2026-04-01T00:00"}, "from:"),
        ({"range": "custom", "from": "2026-04-01T00:00", "to": "2026-04-01T00:00"}, "to:"),
        ({"range": "custom", "from": "2025-01-01T00:00", "to": "2026-04-01T00:00"}, "from/to:"),
    ]:
        with pytest.raises(RangeError) as error:
            parse_range(query, NOW)
        assert str(error.value).startswith(field), query


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 5, day, hour, minute, tzinfo=UTC)


def test_cover_uses_the_coarsest_exact_pieces() -> None:
    assert cover(at(1, 22, 31), at(4, 1, 5), (DAY, HOUR, MINUTE)) == [
        (MINUTE, at(1, 22, 31), at(1, 23)),
        (HOUR, at(1, 23), at(2)),
        (DAY, at(2), at(4)),
        (HOUR, at(4), at(4, 1)),
        (MINUTE, at(4, 1), at(4, 1, 5)),
    ]
    assert cover(at(1, 10, 5), at(1, 10, 50), (DAY, HOUR, MINUTE)) == [
        (MINUTE, at(1, 10, 5), at(1, 10, 50))
    ]
    assert cover(at(1, 10), at(1, 12), (HOUR, MINUTE)) == [(HOUR, at(1, 10), at(1, 12))]
    assert cover(at(1), at(1), (HOUR, MINUTE)) == []
