"""Accounting intervals aligned to the site's local wall clock, and energy apportioned to them.

Times are epoch milliseconds (UTC instants). An interval is half-open, `[start, end)`, in UTC.

Boundaries: an instant is the start of an interval (of a period: interval, hour, day, month) when
its local wall-clock time is exactly aligned (15-min grid: :00, :15, :30, :45; hour: :00; day:
00:00; month: the 1st at 00:00), or when the zone's UTC offset changes there and the local period
changes with it (a clock that jumps over an aligned time). So intervals are always contiguous
and never overlap, and:

- a spring-forward gap just has no intervals for the skipped wall-clock times (Europe/Berlin
  2026-03-29: 01:45+01:00 is followed by 03:00+02:00; that day is 23 hours long);
- a fall-back fold gives the repeated wall-clock times their own intervals, told apart by their
  offset in `label` (Europe/Berlin 2026-10-25: hour 02:00+02:00, then 02:00+01:00; the day is 25
  hours long);
- a shift that is not a whole number of intervals (Australia/Lord_Howe, 30 min) makes the
  interval around it shorter or longer than `minutes`.
It assumes a zone's offset changes at most once within one period (one day for days), which holds
for the tz database in practice.

Apportioning: a segment's energy was consumed over `[start_ms, end_ms)` and is split between the
intervals in proportion to the overlap. So a reading exactly on a boundary closes the interval
before it: (08:10, 08:15] belongs wholly to the 08:00 interval, and an interval the segment only
touches at its end gets nothing and is not listed. A segment inside one interval goes whole to it.
The parts are whole ticks by the largest-remainder method (ties to the earlier interval), so they
sum exactly to the segment's ticks, and likewise its held_out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.accounting.energy import Segment

PERIODS = ("interval", "hour", "day", "month")
MAX_INTERVALS = 100_000  # ~3 years of 15-min intervals
VALID_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)

_MS = timedelta(milliseconds=1)
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Grid:
    timezone: str  # IANA name, e.g. "Asia/Shanghai"
    minutes: int = 15  # interval length, must divide 60
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.minutes, bool) or self.minutes not in VALID_MINUTES:
            raise ValueError(
                f"grid minutes must divide 60 (one of {VALID_MINUTES}), got {self.minutes!r}"
            )
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"unknown time zone: {self.timezone!r}") from exc
        object.__setattr__(self, "_zone", zone)

    def start(self, ts_ms: int) -> int:
        """Start of the interval holding `ts_ms`."""
        return self._floor(ts_ms, self.minutes * 60_000)

    def end(self, start_ms: int) -> int:
        """End of the interval starting at `start_ms` (the first boundary after any instant)."""
        return self._next(start_ms, self.minutes * 60_000)

    def period_start(self, ts_ms: int, period: str) -> int:
        if period == "month":
            start = self._floor(ts_ms, _DAY_MS)
            while not self._month_boundary(start):
                start = self._floor(start - 1, _DAY_MS)
            return start
        return self._floor(ts_ms, self._step(period))

    def period_end(self, start_ms: int, period: str) -> int:
        if period == "month":
            end = self._next(start_ms, _DAY_MS)
            while not self._month_boundary(end):
                end = self._next(end, _DAY_MS)
            return end
        return self._next(start_ms, self._step(period))

    def label(self, start_ms: int) -> str:
        """ISO 8601 local time with offset, e.g. "2026-11-22T08:15:00+08:00"."""
        ms = start_ms % 1000
        local = self._local(start_ms).replace(microsecond=ms * 1000)
        return local.isoformat(timespec="milliseconds" if ms else "seconds")

    def apportion(
        self, segment: Segment, *, max_intervals: int = MAX_INTERVALS
    ) -> list[tuple[int, int, int]]:
        """[(interval_start_ms, ticks, held_out)] for every interval the segment overlaps.

        Raises ValueError when the segment spans more than `max_intervals` intervals (a long
        outage): the caller decides what to do with it rather than get a huge list.
        """
        first, last = segment.start_ms, segment.end_ms
        # Intervals average `minutes` long, so twice that many is over the cap without counting.
        if (last - first) // (self.minutes * 60_000) > 2 * max_intervals:
            raise ValueError(f"segment spans more than {max_intervals} intervals")
        starts: list[int] = []
        overlaps: list[int] = []
        start = self.start(first)
        while start < last:
            end = self.end(start)
            starts.append(start)
            overlaps.append(min(last, end) - max(first, start))
            if len(starts) > max_intervals:
                raise ValueError(f"segment spans more than {max_intervals} intervals")
            start = end
        ticks = _largest_remainder(segment.ticks, overlaps)
        held_out = _largest_remainder(segment.held_out, overlaps)
        return list(zip(starts, ticks, held_out, strict=True))

    def _step(self, period: str) -> int:
        if period == "interval":
            return self.minutes * 60_000
        if period == "hour":
            return _HOUR_MS
        if period == "day":
            return _DAY_MS
        raise ValueError(f"unknown period {period!r}, expected one of {PERIODS}")

    def _local(self, ts_ms: int) -> datetime:
        return datetime.fromtimestamp(ts_ms // 1000, self._zone)

    def _offset(self, ts_ms: int) -> int:
        """UTC offset in ms at `ts_ms` (offsets change on whole seconds)."""
        offset = self._local(ts_ms).utcoffset()
        assert offset is not None
        return offset // _MS

    def _change_after(self, after_ms: int, until_ms: int) -> int:
        """The first instant in (after_ms, until_ms] with another offset than `after_ms` has.

        The caller knows the offsets at both ends differ; a binary search over whole seconds.
        """
        offset = self._offset(after_ms)
        low, high = after_ms // 1000, until_ms // 1000
        while high - low > 1:
            middle = (low + high) // 2
            if self._offset(middle * 1000) == offset:
                low = middle
            else:
                high = middle
        return high * 1000

    def _starts_period(self, change_ms: int, step: int) -> bool:
        """Whether the offset change at `change_ms` starts a new interval of `step`."""
        before, after = self._offset(change_ms - 1), self._offset(change_ms)
        wall = change_ms + after
        return wall % step == 0 or (change_ms - 1 + before) // step != wall // step

    def _floor(self, ts_ms: int, step: int) -> int:
        """The last boundary at or before `ts_ms` for intervals of `step` ms of wall clock."""
        offset = self._offset(ts_ms)
        aligned = (ts_ms + offset) // step * step - offset
        if self._offset(aligned) == offset:
            return aligned
        change = self._change_after(aligned, ts_ms)
        # No aligned instant in [change, ts_ms]: the interval began at the change or before it.
        if self._starts_period(change, step):
            return change
        return self._floor(change - 1, step)

    def _next(self, ts_ms: int, step: int) -> int:
        """The first boundary after `ts_ms` for intervals of `step` ms of wall clock."""
        offset = self._offset(ts_ms)
        aligned = ((ts_ms + offset) // step + 1) * step - offset
        if self._offset(aligned) == offset:
            return aligned
        change = self._change_after(ts_ms, aligned)
        if self._starts_period(change, step):
            return change
        return self._next(change, step)

    def _month_boundary(self, day_start_ms: int) -> bool:
        here, before = self._local(day_start_ms), self._local(day_start_ms - 1)
        aligned = (day_start_ms + self._offset(day_start_ms)) % _DAY_MS == 0 and here.day == 1
        return aligned or (here.year, here.month) != (before.year, before.month)


def _largest_remainder(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (all > 0), in whole units summing to `total`."""
    whole = sum(weights)
    parts = [total * weight // whole for weight in weights]
    remainders = [total * weight % whole for weight in weights]
    left = total - sum(parts)
    for index in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        parts[index] += 1
    return parts
