"""Energy from meter readings, counted in integer ticks (1 tick = 1e-6 of the counter's unit).

No floats are accumulated: a register value becomes ticks once, exactly (`to_ticks`), and all
arithmetic after that is on ints (or `Fraction` inside `PowerIntegrator`).

Every result is a `Segment`: the energy between two readings, `start_ms` to `end_ms`.

`CounterTrack` follows a cumulative counter (kWh register, m3 register, or a pulse total: pulse
inputs need nothing special, the caller converts the pulse count to ticks and feeds it like any
register). Readings arrive in time order; per reading:

- first reading: sets the baseline, no segment.
- `ts_ms` not after the latest reading seen: ignored, counted as `out_of_order`.
- rise: one segment with the difference; flagged `estimated` when the readings are more than
  `gap_ms` apart (the energy is real, only its spread over time is unknown).
- fall, with `modulus` set and the wrapped difference plausible: a `rollover` segment with
  `modulus - last + value`. Plausible means within the maximum rate when one is set, otherwise the
  last value was in the top tenth of the range and the new one is in the bottom tenth.
- any other fall (meter reset or replaced): a zero `reset` segment; the baseline restarts at the
  new value. Energy is never negative.
- spike (only with `max_ticks_per_ms`): a rise above the maximum rate is not trusted until the
  next reading decides. If that reading is plausible from the old baseline, the suspect was a
  glitch: it is dropped and counting continues from the old baseline. Else, if it is plausible
  from the suspect, the counter really jumped: a `spike` segment reports the jump as `held_out`
  (kept out of totals) and counting continues from the suspect. Else the suspect is dropped and
  the reading is judged against the old baseline again (it may be a reset or a new suspect).

A rise over `dt` ms is plausible when it is at most `dt * max_ticks_per_ms * 1.1 + resolution`:
10 % margin for the jitter between the meter's clock and our timestamps, plus one step of the
register (`resolution` ticks, e.g. 10_000 for a 0.01 kWh register) because a register rounds its
value down and may step just after a reading.

A reading below zero is a decoding error upstream: `feed` raises `ValueError`. A low glitch (a
register read as 0) looks like a reset; with a maximum rate the following real value is then
a jump from 0, held out as a spike, so it never inflates the totals.

`PowerIntegrator` makes energy from power readings alone (devices without a counter): the
trapezoid between consecutive readings, in kWh ticks (1 tick = 3.6 W*s = 3600 W*ms), `integrated`.
Only consumption is counted: the line between two readings is clipped at zero (a sign change counts
only the triangle above zero); export needs its own counter. The sub-tick remainder is carried, so
the total over many segments is the exact integral rounded down once. Readings further apart than
`gap_limit_ms` give a zero `gap` segment: that energy is unknown and not invented.

Both classes expose `state()`: a JSON-serialisable dict (ints, strings and lists) from which the
constructor restores the exact same object (`state=`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from fractions import Fraction

TICKS_PER_UNIT = 1_000_000
W_MS_PER_TICK = 3600  # 1 tick = 1e-6 kWh = 3.6 W*s = 3600 W*ms

FLAG_ESTIMATED = "estimated"
FLAG_INTEGRATED = "integrated"
FLAG_GAP = "gap"
FLAG_RESET = "reset"
FLAG_ROLLOVER = "rollover"
FLAG_SPIKE = "spike"
FLAGS = frozenset(
    {FLAG_ESTIMATED, FLAG_INTEGRATED, FLAG_GAP, FLAG_RESET, FLAG_ROLLOVER, FLAG_SPIKE}
)

_STATE_VERSION = 1
_RATE_MARGIN = Fraction(11, 10)


def to_ticks(value: float) -> int:
    """A register value in its unit as ticks, exactly: 24852.49 -> 24852490000 (half-even)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite value: {value!r}")
    # Fast path: below 1e9 the float product is within 0.25 tick of the exact one, so when it is
    # within 1e-3 of a whole number no exact rounding can land elsewhere.
    scaled = value * TICKS_PER_UNIT
    nearest = round(scaled)
    if abs(scaled - nearest) < 1e-3 and abs(value) < 1e9:
        return nearest
    return round(Decimal(repr(value)) * TICKS_PER_UNIT)


@dataclass(frozen=True)
class Segment:
    start_ms: int  # time of the reading that opened it
    end_ms: int  # time of the reading that closed it
    ticks: int  # energy counted into totals
    held_out: int = 0  # energy of an implausible jump: reported, kept out of totals
    flags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError(f"segment must end after it starts: {self.start_ms}..{self.end_ms}")
        if self.ticks < 0 or self.held_out < 0:
            raise ValueError(f"negative energy in segment: {self.ticks}, {self.held_out}")
        if not self.flags <= FLAGS:
            raise ValueError(f"unknown segment flags: {sorted(self.flags - FLAGS)}")


@dataclass
class TrackCounters:
    out_of_order: int = 0  # readings not after the latest one seen: ignored
    resets: int = 0
    rollovers: int = 0
    spikes: int = 0  # implausible jumps confirmed by the next reading: held out
    glitches: int = 0  # implausible readings the next reading did not confirm: dropped


_Reading = tuple[int, int]  # (ts_ms, ticks)


class CounterTrack:
    """Energy from a cumulative counter (kWh register, m3 register, or a pulse total)."""

    def __init__(
        self,
        *,
        modulus: int | None = None,
        max_ticks_per_ms: Fraction | None = None,
        gap_ms: int = 300_000,
        resolution: int = 1,
        state: Mapping[str, object] | None = None,
    ) -> None:
        if modulus is not None and modulus <= 0:
            raise ValueError(f"modulus must be > 0, got {modulus}")
        if max_ticks_per_ms is not None and max_ticks_per_ms <= 0:
            raise ValueError(f"max_ticks_per_ms must be > 0, got {max_ticks_per_ms}")
        if gap_ms <= 0 or resolution <= 0:
            raise ValueError(f"gap_ms and resolution must be > 0, got {gap_ms}, {resolution}")
        self._modulus = modulus
        self._rate = None if max_ticks_per_ms is None else Fraction(max_ticks_per_ms)
        self._gap_ms = gap_ms
        self._resolution = resolution
        self._base: _Reading | None = None
        self._suspect: _Reading | None = None
        self._counts = TrackCounters()
        if state is not None:
            self._restore(state)

    @property
    def counters(self) -> TrackCounters:
        return replace(self._counts)

    def feed(self, ts_ms: int, ticks: int) -> list[Segment]:
        base = self._base
        if (  # the common case, decided without the judging below: a plain, timely rise
            base is not None
            and self._suspect is None
            and self._rate is None
            and ticks >= base[1]
            and base[0] < ts_ms <= base[0] + self._gap_ms
        ):
            self._base = (ts_ms, ticks)
            return [Segment(base[0], ts_ms, ticks - base[1])]
        if ticks < 0:
            raise ValueError(f"counter reading below zero: {ticks}")
        reading = (ts_ms, ticks)
        if self._base is None:
            self._base = reading
            return []
        latest = self._suspect[0] if self._suspect is not None else self._base[0]
        if ts_ms <= latest:
            self._counts.out_of_order += 1
            return []
        if self._suspect is not None:
            suspect, self._suspect = self._suspect, None
            kind, delta = self._judge(self._base, reading)
            if kind in ("rise", "rollover"):
                self._counts.glitches += 1
                return self._advance(reading, kind, delta)
            kind, delta = self._judge(suspect, reading)
            if kind in ("rise", "rollover"):
                self._counts.spikes += 1
                jump = Segment(
                    self._base[0],
                    suspect[0],
                    0,
                    held_out=suspect[1] - self._base[1],
                    flags=frozenset({FLAG_SPIKE}),
                )
                self._base = suspect
                return [jump, *self._advance(reading, kind, delta)]
            self._counts.glitches += 1
        kind, delta = self._judge(self._base, reading)
        if kind == "implausible":
            self._suspect = reading
            return []
        return self._advance(reading, kind, delta)

    def _plausible(self, rise: int, dt_ms: int) -> bool:
        return self._rate is None or rise <= dt_ms * self._rate * _RATE_MARGIN + self._resolution

    def _judge(self, base: _Reading, reading: _Reading) -> tuple[str, int]:
        """How `reading` follows `base`: rise, rollover, reset or implausible (a rise), with ticks."""
        dt = reading[0] - base[0]
        last, value = base[1], reading[1]
        if value >= last:
            rise = value - last
            return ("rise" if self._plausible(rise, dt) else "implausible"), rise
        if self._modulus is not None:
            wrapped = self._modulus - last + value
            if self._rate is not None:
                plausible = self._plausible(wrapped, dt)
            else:
                plausible = 10 * last >= 9 * self._modulus and 10 * value <= self._modulus
            if wrapped > 0 and plausible:
                return "rollover", wrapped
        return "reset", 0

    def _advance(self, reading: _Reading, kind: str, ticks: int) -> list[Segment]:
        assert self._base is not None
        start = self._base[0]
        self._base = reading
        if kind == "reset":
            self._counts.resets += 1
            return [Segment(start, reading[0], 0, flags=frozenset({FLAG_RESET}))]
        flags = set()
        if kind == "rollover":
            self._counts.rollovers += 1
            flags.add(FLAG_ROLLOVER)
        if reading[0] - start > self._gap_ms:
            flags.add(FLAG_ESTIMATED)
        return [Segment(start, reading[0], ticks, flags=frozenset(flags))]

    def state(self) -> dict[str, object]:
        return {
            "version": _STATE_VERSION,
            "baseline": list(self._base) if self._base is not None else [],
            "suspect": list(self._suspect) if self._suspect is not None else [],
            **vars(self._counts),
        }

    def _restore(self, state: Mapping[str, object]) -> None:
        _check_version(state)
        self._base = _reading(state, "baseline")
        self._suspect = _reading(state, "suspect")
        if self._suspect is not None and self._base is None:
            raise ValueError("counter state: a suspect without a baseline")
        self._counts = TrackCounters(**{f.name: _int(state, f.name) for f in fields(TrackCounters)})


class PowerIntegrator:
    """Energy (kWh ticks) from power readings alone, for devices without an energy counter."""

    def __init__(self, *, gap_limit_ms: int, state: Mapping[str, object] | None = None) -> None:
        if gap_limit_ms <= 0:
            raise ValueError(f"gap_limit_ms must be > 0, got {gap_limit_ms}")
        self._gap_limit_ms = gap_limit_ms
        self._last: tuple[int, Fraction] | None = None
        self._carry = Fraction(0)  # W*ms not yet a whole tick, always in [0, W_MS_PER_TICK)
        self.out_of_order = 0
        if state is not None:
            self._restore(state)

    def feed(self, ts_ms: int, watts: float) -> list[Segment]:
        if not math.isfinite(watts):
            raise ValueError(f"not a finite power: {watts!r}")
        power = Fraction(Decimal(repr(watts)))
        if self._last is None:
            self._last = (ts_ms, power)
            return []
        last_ts, last_power = self._last
        if ts_ms <= last_ts:
            self.out_of_order += 1
            return []
        self._last = (ts_ms, power)
        dt = ts_ms - last_ts
        if dt > self._gap_limit_ms:
            return [Segment(last_ts, ts_ms, 0, flags=frozenset({FLAG_GAP}))]
        total = self._carry + _positive_area(last_power, power, dt)
        ticks = math.floor(total / W_MS_PER_TICK)
        self._carry = total - ticks * W_MS_PER_TICK
        return [Segment(last_ts, ts_ms, ticks, flags=frozenset({FLAG_INTEGRATED}))]

    def state(self) -> dict[str, object]:
        return {
            "version": _STATE_VERSION,
            "last": [self._last[0], str(self._last[1])] if self._last is not None else [],
            "carry": str(self._carry),
            "out_of_order": self.out_of_order,
        }

    def _restore(self, state: Mapping[str, object]) -> None:
        _check_version(state)
        last = state.get("last")
        if last == []:
            self._last = None
        elif (
            isinstance(last, list)
            and len(last) == 2
            and _is_int(last[0])
            and isinstance(last[1], str)
        ):
            self._last = (last[0], Fraction(last[1]))
        else:
            raise ValueError(f"power state: bad `last`: {last!r}")
        carry = state.get("carry")
        if not isinstance(carry, str) or not 0 <= Fraction(carry) < W_MS_PER_TICK:
            raise ValueError(f"power state: bad `carry`: {carry!r}")
        self._carry = Fraction(carry)
        self.out_of_order = _int(state, "out_of_order")


def _positive_area(p0: Fraction, p1: Fraction, dt_ms: int) -> Fraction:
    """W*ms under the straight line from p0 to p1 over dt_ms, counting only the part above zero."""
    if p0 >= 0 and p1 >= 0:
        return (p0 + p1) * dt_ms / 2
    if p0 <= 0 and p1 <= 0:
        return Fraction(0)
    high, low = max(p0, p1), min(p0, p1)
    return high * high / (high - low) * dt_ms / 2  # the triangle above the zero crossing


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(state: Mapping[str, object], key: str) -> int:
    value = state.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"state: `{key}` must be an int >= 0, got {value!r}")


def _reading(state: Mapping[str, object], key: str) -> _Reading | None:
    value = state.get(key)
    if value == []:
        return None
    if isinstance(value, list) and len(value) == 2:
        ts, ticks = value
        if _is_int(ts) and _is_int(ticks) and ticks >= 0:
            return ts, ticks
    raise ValueError(f"counter state: bad `{key}`: {value!r}")


def _check_version(state: Mapping[str, object]) -> None:
    if state.get("version") != _STATE_VERSION:
        raise ValueError(f"unsupported state version: {state.get('version')!r}")
