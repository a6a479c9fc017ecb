"""Intervals aligned to local wall-clock time, and energy split between them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.accounting.energy import FLAG_GAP, Segment
from gateway.accounting.grid import PERIODS, VALID_MINUTES, Grid

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(iso: str) -> int:
    return (datetime.fromisoformat(iso) - EPOCH) // timedelta(milliseconds=1)


def offset(zone: str, ts_ms: int) -> timedelta | None:
    return datetime.fromtimestamp(ts_ms // 1000, ZoneInfo(zone)).utcoffset()


def walk(grid: Grid, first: int, last: int, period: str = "interval") -> list[int]:
    """Starts of the periods from the one holding `first` up to the one holding `last - 1`."""
    starts = [grid.period_start(first, period)]
    while (end := grid.period_end(starts[-1], period)) < last:
        starts.append(end)
    return starts


# --- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [0, 7, 8, 45, 90, -15])
def test_minutes_must_divide_an_hour(minutes: int) -> None:
    with pytest.raises(ValueError, match=f"got {minutes}"):
        Grid("Asia/Shanghai", minutes)


def test_unknown_zone_and_period_are_refused() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        Grid("Mars/Olympus")
    with pytest.raises(ValueError, match="week"):
        Grid("UTC").period_start(0, "week")


# --- Asia/Shanghai -----------------------------------------------------------------------------

SHANGHAI = Grid("Asia/Shanghai")


def test_intervals_align_to_local_quarter_hours() -> None:
    assert ms("2026-11-22T00:00+08:00") == ms("2026-11-21T16:00Z")
    start = SHANGHAI.start(ms("2026-11-22T08:17:30.250+08:00"))
    assert start == ms("2026-11-22T08:15+08:00")
    assert SHANGHAI.label(start) == "2026-11-22T08:15:00+08:00"
    assert SHANGHAI.end(start) == ms("2026-11-22T08:30+08:00")
    # A reading exactly on a boundary is in the interval that begins there.
    assert SHANGHAI.start(ms("2026-11-22T08:30+08:00")) == ms("2026-11-22T08:30+08:00")
    assert SHANGHAI.start(ms("2026-11-22T08:30+08:00") - 1) == start


@pytest.mark.parametrize("minutes", VALID_MINUTES)
def test_every_interval_length_aligns_to_the_local_hour(minutes: int) -> None:
    grid = Grid("Asia/Shanghai", minutes)
    hour = ms("2026-11-22T08:00+08:00")
    starts = walk(grid, hour, hour + 3_600_000)
    assert len(starts) == 60 // minutes
    assert starts == [hour + i * minutes * 60_000 for i in range(60 // minutes)]
    assert grid.end(starts[-1]) == hour + 3_600_000


def test_day_and_month_follow_local_time_not_utc() -> None:
    ts = ms("2026-12-01T03:00+08:00")  # still November in UTC
    assert ts == ms("2026-11-30T19:00Z")
    day = SHANGHAI.period_start(ts, "day")
    assert SHANGHAI.label(day) == "2026-12-01T00:00:00+08:00"
    assert SHANGHAI.period_end(day, "day") == ms("2026-12-02T00:00+08:00")
    month = SHANGHAI.period_start(ts, "month")
    assert month == ms("2026-11-30T16:00Z")
    assert SHANGHAI.label(SHANGHAI.period_end(month, "month")) == "2027-01-01T00:00:00+08:00"
    assert SHANGHAI.period_start(ms("2026-11-30T23:59:59.999+08:00"), "month") == ms(
        "2026-11-01T00:00+08:00"
    )
    assert SHANGHAI.period_start(ts, "hour") == ts
    assert SHANGHAI.period_end(ts, "hour") == ms("2026-12-01T04:00+08:00")
    leap = SHANGHAI.period_start(ms("2028-02-15T12:00+08:00"), "month")
    assert SHANGHAI.period_end(leap, "month") - leap == 29 * 86_400_000


# --- zones with daylight saving time -----------------------------------------------------------

BERLIN = Grid("Europe/Berlin")


def test_berlin_spring_forward_day_has_23_hours_of_contiguous_intervals() -> None:
    day = BERLIN.period_start(ms("2026-03-29T12:00+02:00"), "day")
    end = BERLIN.period_end(day, "day")
    assert (BERLIN.label(day), BERLIN.label(end)) == (
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    )
    assert end - day == 23 * 3_600_000
    starts = walk(BERLIN, day, end)
    assert len(starts) == 92
    assert all(b - a == 900_000 for a, b in pairwise(starts))
    assert BERLIN.label(starts[7]) == "2026-03-29T01:45:00+01:00"
    assert BERLIN.label(starts[8]) == "2026-03-29T03:00:00+02:00"
    assert len(walk(BERLIN, day, end, "hour")) == 23


def test_berlin_fall_back_day_has_25_hours_and_the_repeated_hour_twice() -> None:
    day = BERLIN.period_start(ms("2026-10-25T12:00+01:00"), "day")
    end = BERLIN.period_end(day, "day")
    assert end - day == 25 * 3_600_000
    starts = walk(BERLIN, day, end)
    assert len(starts) == 100
    assert all(b - a == 900_000 for a, b in pairwise(starts))
    hours = [BERLIN.label(h) for h in walk(BERLIN, day, end, "hour")]
    assert len(hours) == 25
    assert hours[2:4] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    october = BERLIN.period_start(day, "month")
    assert BERLIN.period_end(october, "month") - october == (31 * 24 + 1) * 3_600_000


def test_odd_shifts_and_skipped_midnights() -> None:
    # Lord Howe shifts by 30 min: the hour around the change is 30 or 90 minutes long.
    lord_howe = Grid("Australia/Lord_Howe", 60)
    spring = walk(lord_howe, ms("2026-10-04T01:00+10:30"), ms("2026-10-04T04:00+11:00"))
    assert [lord_howe.label(s) for s in spring] == [
        "2026-10-04T01:00:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-04T03:00:00+11:00",
    ]
    autumn = lord_howe.start(ms("2026-04-05T01:45+10:30"))  # the second 01:30..02:00
    assert lord_howe.label(autumn) == "2026-04-05T01:00:00+11:00"
    assert lord_howe.end(autumn) - autumn == 90 * 60_000
    # Santiago skips midnight in September: the day begins at 01:00.
    santiago = Grid("America/Santiago")
    day = santiago.period_start(ms("2026-09-06T12:00-03:00"), "day")
    assert santiago.label(day) == "2026-09-06T01:00:00-03:00"
    assert santiago.period_end(day, "day") - day == 23 * 3_600_000


ZONES = st.sampled_from(
    [
        "UTC",
        "Asia/Shanghai",
        "Europe/Berlin",
        "America/New_York",
        "America/Santiago",
        "America/St_Johns",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "Africa/Casablanca",
    ]
)
MINUTES = st.sampled_from(VALID_MINUTES)
TIMES = st.integers(ms("1900-01-01T00:00Z"), ms("2100-01-01T00:00Z"))


@settings(max_examples=300, deadline=None)
@given(ZONES, MINUTES, st.sampled_from(PERIODS), TIMES)
def test_periods_tile_time(zone: str, minutes: int, period: str, ts: int) -> None:
    grid = Grid(zone, minutes)
    start = grid.period_start(ts, period)
    end = grid.period_end(start, period)
    assert start <= ts < end
    assert grid.period_start(start, period) == start
    assert grid.period_start(end - 1, period) == start
    assert grid.period_start(end, period) == end
    assert grid.period_end(ts, period) == end
    if period in ("interval", "hour", "day"):
        # In a zone's steady state a period is its nominal length.
        nominal = {"interval": minutes * 60_000, "hour": 3_600_000, "day": 86_400_000}[period]
        if offset(zone, start) == offset(zone, end) == offset(zone, ts):
            assert end - start == nominal


# --- apportion ---------------------------------------------------------------------------------


def test_a_segment_inside_one_interval_goes_whole_to_it() -> None:
    a, b = ms("2026-11-22T08:10+08:00"), ms("2026-11-22T08:15+08:00")
    assert SHANGHAI.apportion(Segment(a, b, 777, held_out=5)) == [
        (ms("2026-11-22T08:00+08:00"), 777, 5)
    ]
    after = ms("2026-11-22T08:20+08:00")
    assert SHANGHAI.apportion(Segment(b, after, 3)) == [(b, 3, 0)]


def test_a_segment_across_intervals_is_split_by_time_exactly() -> None:
    q = ms("2026-11-22T08:00+08:00")
    minute = 60_000
    assert SHANGHAI.apportion(Segment(q + 10 * minute, q + 20 * minute, 1_000)) == [
        (q, 500, 0),
        (q + 15 * minute, 500, 0),
    ]
    three = SHANGHAI.apportion(Segment(q, q + 45 * minute, 10, held_out=2))
    assert three == [(q, 4, 1), (q + 15 * minute, 3, 1), (q + 30 * minute, 3, 0)]


def test_a_zero_segment_still_lists_the_intervals_it_covers() -> None:
    q = ms("2026-11-22T08:00+08:00")
    gap = Segment(q + 1, q + 3_600_000, 0, flags=frozenset({FLAG_GAP}))
    parts = SHANGHAI.apportion(gap)
    assert [s for s, _, _ in parts] == [q + i * 900_000 for i in range(4)]
    assert all(t == h == 0 for _, t, h in parts)


def test_absurd_spans_are_refused() -> None:
    q = ms("2026-11-22T08:00+08:00")
    assert len(SHANGHAI.apportion(Segment(q, q + 3_600_000, 9), max_intervals=4)) == 4
    with pytest.raises(ValueError, match="4 intervals"):
        SHANGHAI.apportion(Segment(q, q + 3_600_001, 9), max_intervals=4)
    with pytest.raises(ValueError):
        SHANGHAI.apportion(Segment(q, ms("2036-11-22T08:00+08:00"), 0))


@settings(max_examples=300, deadline=None)
@given(
    ZONES,
    MINUTES,
    st.integers(ms("2000-01-01T00:00Z"), ms("2040-01-01T00:00Z")),
    st.one_of(st.integers(1, 3_600_000), st.integers(1, 3 * 86_400_000)),
    st.integers(0, 10**12),
    st.integers(0, 10**9),
)
def test_apportioned_parts_sum_exactly_and_stay_within_a_tick(
    zone: str, minutes: int, first: int, length: int, ticks: int, held_out: int
) -> None:
    grid = Grid(zone, minutes)
    last = first + length
    parts = grid.apportion(Segment(first, last, ticks, held_out=held_out))
    assert sum(t for _, t, _ in parts) == ticks
    assert sum(h for _, _, h in parts) == held_out
    starts = [s for s, _, _ in parts]
    assert starts[0] == grid.start(first)
    assert starts[-1] == grid.start(last - 1)
    for start, following in pairwise(starts):
        assert grid.end(start) == following  # sorted and contiguous
    for start, part_ticks, part_held in parts:
        assert grid.start(start) == start
        overlap = min(last, grid.end(start)) - max(first, start)
        assert overlap > 0
        assert abs(part_ticks - Fraction(ticks * overlap, length)) < 1
        assert abs(part_held - Fraction(held_out * overlap, length)) < 1
