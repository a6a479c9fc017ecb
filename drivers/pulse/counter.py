"""Counting pulses: a software debounce, a sanity limit on the rate, and exact conversion."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from fractions import Fraction

NS_PER_S = 1_000_000_000
# Quantity-level flag (beside those in drivers/snapshot.py): pulses above the input's sanity
# limit on rate were rejected since the previous record; the value counts only those accepted.
FLAG_RATE_LIMITED = "rate_limited"


def pulses_to_units(total: int, pulses_per_unit: float) -> float:
    """The quantity `total` pulses stand for. Derived from the integer total every time, never
    accumulated, and computed in exact rationals: the pulse weight is taken as the decimal the
    configuration wrote (1/0.1 is 10, not 9.999…), and the one rounding is to the nearest float."""
    return float(Fraction(total) / Fraction(repr(float(pulses_per_unit))))


class PulseCounter:
    """Counts edges (monotonic timestamps in ns) as pulses.

    An edge closer than `debounce_s` to the previous pulse is contact bounce and is rejected. A
    pulse that would raise the rate above `max_rate_hz` over the rate window (1 s, or one pulse
    period if that is longer) is rejected as implausible (interference, a chattering contact):
    counted in `rejected_rate`, not in `total`.
    """

    def __init__(self, debounce_s: float, max_rate_hz: float, total: int = 0) -> None:
        self.debounce_ns = round(debounce_s * NS_PER_S)
        self.window_ns = round(max(1.0, 1.0 / max_rate_hz) * NS_PER_S)
        self.budget = max(1, int(max_rate_hz * self.window_ns / NS_PER_S + 1e-9))
        self.total = total
        self.rejected_bounce = 0
        self.rejected_rate = 0
        self._last_pulse_ns: int | None = None
        self._accepted: deque[int] = deque()  # accepted pulses inside the rate window

    def feed(self, edges: Iterable[int]) -> int:
        """Counts the edges, oldest first; returns how many were accepted."""
        accepted = 0
        for ts in edges:
            last = self._last_pulse_ns
            if last is not None and ts - last < self.debounce_ns:
                self.rejected_bounce += 1
                continue
            self._last_pulse_ns = ts
            while self._accepted and ts - self._accepted[0] >= self.window_ns:
                self._accepted.popleft()
            if len(self._accepted) >= self.budget:
                self.rejected_rate += 1
                continue
            self._accepted.append(ts)
            accepted += 1
        self.total += accepted
        return accepted
