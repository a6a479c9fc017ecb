"""The energy engine: counters (rises, gaps, rollovers, resets, spikes) and power integration."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.accounting.energy import (
    FLAG_ESTIMATED,
    FLAG_GAP,
    FLAG_INTEGRATED,
    FLAG_RESET,
    FLAG_ROLLOVER,
    FLAG_SPIKE,
    CounterTrack,
    PowerIntegrator,
    Segment,
    TrackCounters,
    to_ticks,
)

# --- to_ticks and Segment ---------------------------------------------------------------------


def test_to_ticks_is_exact_and_rounds_half_even() -> None:
    assert to_ticks(24852.49) == 24_852_490_000
    assert to_ticks(0.1 + 0.2) == 300_000  # repr 0.30000000000000004 rounds to the tick
    assert to_ticks(0.0000005) == 0  # exactly half a tick: to even
    assert to_ticks(0.0000015) == 2
    assert to_ticks(99_999_999.99) == 99_999_999_990_000
    with pytest.raises(ValueError):
        to_ticks(math.nan)


def test_segment_rejects_impossible_values() -> None:
    with pytest.raises(ValueError):
        Segment(10, 10, 0)
    with pytest.raises(ValueError):
        Segment(0, 10, -1)
    with pytest.raises(ValueError):
        Segment(0, 10, 0, flags=frozenset({"made-up"}))


# --- CounterTrack: the rules, one by one -------------------------------------------------------


def test_first_reading_sets_the_baseline_then_rises_are_segments() -> None:
    track = CounterTrack()
    assert track.feed(1_000, 5_000) == []
    assert track.feed(2_000, 5_700) == [Segment(1_000, 2_000, 700)]
    assert track.feed(3_000, 5_700) == [Segment(2_000, 3_000, 0)]


def test_a_gap_flags_the_segment_estimated_but_keeps_its_energy() -> None:
    track = CounterTrack(gap_ms=60_000)
    track.feed(0, 100)
    assert track.feed(60_000, 200) == [Segment(0, 60_000, 100)]  # exactly gap_ms: not a gap
    assert track.feed(120_001, 900) == [
        Segment(60_000, 120_001, 700, flags=frozenset({FLAG_ESTIMATED}))
    ]


def test_out_of_order_readings_are_ignored_and_counted() -> None:
    track = CounterTrack()
    track.feed(1_000, 100)
    assert track.feed(1_000, 500) == []
    assert track.feed(900, 50) == []
    assert track.feed(2_000, 150) == [Segment(1_000, 2_000, 50)]
    assert track.counters.out_of_order == 2


def test_rollover_without_a_rate_needs_top_to_bottom_tenth() -> None:
    track = CounterTrack(modulus=1_000)
    track.feed(0, 950)
    assert track.feed(1_000, 20) == [Segment(0, 1_000, 70, flags=frozenset({FLAG_ROLLOVER}))]
    # From the middle of the range a fall is a reset, not a rollover.
    track.feed(2_000, 500)
    assert track.feed(3_000, 20) == [Segment(2_000, 3_000, 0, flags=frozenset({FLAG_RESET}))]
    assert track.counters == TrackCounters(rollovers=1, resets=1)


def test_rollover_with_a_rate_is_judged_by_the_rate() -> None:
    track = CounterTrack(modulus=1_000, max_ticks_per_ms=Fraction(1, 10), gap_ms=1_000)
    track.feed(0, 600)
    # 1 s at 0.1 tick/ms allows 100 * 1.1 + 1 = 111 ticks; the wrap is 1000 - 600 + 5 = 405.
    assert track.feed(1_000, 5) == [Segment(0, 1_000, 0, flags=frozenset({FLAG_RESET}))]
    track = CounterTrack(modulus=1_000, max_ticks_per_ms=Fraction(1, 10), gap_ms=1_000)
    track.feed(0, 990)
    assert track.feed(5_000, 40) == [
        Segment(0, 5_000, 50, flags=frozenset({FLAG_ROLLOVER, FLAG_ESTIMATED}))
    ]


def test_a_glitch_just_before_a_rollover_is_dropped() -> None:
    track = CounterTrack(modulus=1_000, max_ticks_per_ms=Fraction(1, 10), gap_ms=1_000)
    track.feed(0, 990)
    assert track.feed(100, 10**9) == []  # register garbage, above the modulus even
    assert track.feed(1_000, 40) == [Segment(0, 1_000, 50, flags=frozenset({FLAG_ROLLOVER}))]
    assert track.counters == TrackCounters(rollovers=1, glitches=1)


def test_reset_never_gives_negative_energy_and_restarts_the_baseline() -> None:
    track = CounterTrack(modulus=10_000)
    track.feed(0, 5_000)
    assert track.feed(1_000, 3) == [Segment(0, 1_000, 0, flags=frozenset({FLAG_RESET}))]
    assert track.feed(2_000, 10) == [Segment(1_000, 2_000, 7)]
    assert track.counters.resets == 1


def test_negative_readings_are_a_decoding_error() -> None:
    with pytest.raises(ValueError):
        CounterTrack().feed(0, -1)


def test_rate_limit_has_ten_percent_margin_plus_one_resolution_step() -> None:
    # 1000 ms at 1 tick/ms: 1000 * 1.1 + 10 = 1110 ticks is the most a rise may be.
    track = CounterTrack(max_ticks_per_ms=Fraction(1), resolution=10)
    track.feed(0, 0)
    assert track.feed(1_000, 1_110) == [Segment(0, 1_000, 1_110)]
    assert track.feed(2_000, 2_221) == []  # 1111: a suspect
    assert track.counters.spikes == track.counters.glitches == 0


def test_a_glitch_is_dropped_and_counting_continues_from_the_old_baseline() -> None:
    track = CounterTrack(max_ticks_per_ms=Fraction(1))
    track.feed(0, 1_000)
    assert track.feed(1_000, 10**12) == []
    assert track.feed(2_000, 2_500) == [Segment(0, 2_000, 1_500)]
    assert track.counters.glitches == 1 and track.counters.spikes == 0


def test_a_confirmed_jump_is_held_out_and_counting_continues_from_it() -> None:
    track = CounterTrack(max_ticks_per_ms=Fraction(1))
    track.feed(0, 1_000)
    assert track.feed(1_000, 10**9) == []
    assert track.feed(2_000, 10**9 + 600) == [
        Segment(0, 1_000, 0, held_out=10**9 - 1_000, flags=frozenset({FLAG_SPIKE})),
        Segment(1_000, 2_000, 600),
    ]
    assert track.counters.spikes == 1
    assert track.feed(3_000, 10**9 + 700) == [Segment(2_000, 3_000, 100)]


def test_a_second_implausible_reading_replaces_the_suspect() -> None:
    track = CounterTrack(max_ticks_per_ms=Fraction(1))
    track.feed(0, 1_000)
    track.feed(1_000, 10**9)
    assert track.feed(2_000, 10**12) == []  # neither from the baseline nor from the suspect
    assert track.counters.glitches == 1
    assert track.feed(3_000, 10**12 + 5) == [
        Segment(0, 2_000, 0, held_out=10**12 - 1_000, flags=frozenset({FLAG_SPIKE})),
        Segment(2_000, 3_000, 5),
    ]


def test_a_reset_after_a_suspect_drops_the_suspect() -> None:
    track = CounterTrack(max_ticks_per_ms=Fraction(1))
    track.feed(0, 5_000)
    track.feed(1_000, 10**9)
    assert track.feed(2_000, 7) == [Segment(0, 2_000, 0, flags=frozenset({FLAG_RESET}))]
    assert track.counters == TrackCounters(resets=1, glitches=1)


def test_state_round_trips_through_json_with_a_pending_suspect() -> None:
    def make(state: dict[str, object] | None = None) -> CounterTrack:
        return CounterTrack(modulus=10**12, max_ticks_per_ms=Fraction(1), gap_ms=5_000, state=state)

    track = make()
    track.feed(0, 1_000)
    track.feed(500, 500)  # reset
    track.feed(1_000, 600)
    track.feed(1_500, 1_000)
    track.feed(2_000, 10**9)  # suspect
    restored = make(json.loads(json.dumps(track.state())))
    assert restored.state() == track.state()
    assert restored.counters == track.counters == TrackCounters(resets=1)
    assert restored.feed(3_000, 1_200) == track.feed(3_000, 1_200) == [Segment(1_500, 3_000, 200)]


def test_bad_state_is_refused() -> None:
    good = CounterTrack().state()
    for broken in ({**good, "version": 99}, {**good, "baseline": [1]}, {**good, "resets": -1}):
        with pytest.raises(ValueError):
            CounterTrack(state=broken)


# --- CounterTrack: properties ------------------------------------------------------------------

DT = st.one_of(
    st.integers(1, 1_000), st.integers(1_000, 600_000), st.integers(600_000, 4 * 3_600_000)
)
RATES = st.sampled_from([None, Fraction(1, 1_000), Fraction(50, 3), Fraction(3)])
MODULI = st.sampled_from([None, 1_000_000, 10**9, 99_999_999 * 10_000])


@dataclass
class History:
    modulus: int | None
    rate: Fraction | None
    readings: list[tuple[int, int]] = field(default_factory=list)  # as fed, incl. out-of-order
    expected: int = 0  # energy the counters really counted between reported readings
    rollovers: int = 0
    resets: int = 0
    late: int = 0
    gap_ms: int = 300_000


def _wrap_looks_plausible(history: History, last: int, value: int, dt: int) -> bool:
    """Whether a reset from `last` to `value` is indistinguishable from a rollover."""
    assert history.modulus is not None
    wrapped = history.modulus - last + value
    if history.rate is not None:
        return wrapped <= dt * history.rate * 2 + 2
    return 10 * last >= 9 * history.modulus and 10 * value <= history.modulus


@st.composite
def histories(
    draw: st.DrawFn,
    moduli: st.SearchStrategy[int | None] = MODULI,
    rates: st.SearchStrategy[Fraction | None] = RATES,
    late: bool = True,
) -> History:
    """A true counter history: consumption within the rate, rollovers, replaced meters."""
    history = History(modulus=draw(moduli), rate=draw(rates))
    top = history.modulus if history.modulus is not None else 10**15
    ts = draw(st.integers(0, 2 * 10**12))
    value = draw(st.one_of(st.integers(0, top - 1), st.integers(max(0, top - 10_000), top - 1)))
    first, crossings = value, 0
    history.readings.append((ts, value))
    for _ in range(draw(st.integers(0, 40))):
        dt = draw(DT)
        ts += dt
        if value > 0 and draw(st.integers(0, 9)) == 0:
            new = draw(st.integers(0, value - 1))
            if history.modulus is None or not _wrap_looks_plausible(history, value, new, dt):
                # The meter is replaced: close the old counter's life, open a new one.
                history.expected += value - first + crossings * (history.modulus or 0)
                history.resets += 1
                value = first = new
                crossings = 0
                history.readings.append((ts, value))
                continue
        if history.rate is not None:
            most = math.floor(dt * history.rate)
        else:
            most = top // 10 if history.modulus is not None else 10**12
        most = min(most, top - 1)
        value += draw(st.one_of(st.just(0), st.just(most), st.integers(0, most)))
        if history.modulus is not None and value >= history.modulus:
            value -= history.modulus
            crossings += 1
            history.rollovers += 1
        history.readings.append((ts, value))
        if late and draw(st.integers(0, 9)) == 0:  # a late or repeated reading
            history.readings.append((ts - draw(st.integers(0, 5_000)), draw(st.integers(0, top))))
            history.late += 1
    history.expected += value - first + crossings * (history.modulus or 0)
    return history


def _feed_all(
    history: History, readings: list[tuple[int, int]], reopen_at: set[int]
) -> tuple[list[Segment], TrackCounters]:
    def make(state: dict[str, object] | None = None) -> CounterTrack:
        return CounterTrack(
            modulus=history.modulus,
            max_ticks_per_ms=history.rate,
            gap_ms=history.gap_ms,
            state=state,
        )

    track = make()
    segments: list[Segment] = []
    for index, (ts, ticks) in enumerate(readings):
        if index in reopen_at:  # a daemon restart: state saved as JSON and restored
            track = make(json.loads(json.dumps(track.state())))
        segments.extend(track.feed(ts, ticks))
    return segments, track.counters


def _assert_well_formed(segments: list[Segment], first_ts: int) -> None:
    for segment in segments:
        assert segment.ticks >= 0 and segment.held_out >= 0
        assert segment.start_ms < segment.end_ms
    starts = [first_ts, *(s.end_ms for s in segments)][: len(segments)]
    assert [s.start_ms for s in segments] == starts  # in order, contiguous, no overlap


@settings(max_examples=300, deadline=None)
@given(histories(), st.sets(st.integers(0, 80), max_size=4))
def test_counted_energy_is_what_the_counters_counted(history: History, reopen: set[int]) -> None:
    segments, counters = _feed_all(history, history.readings, reopen)
    assert sum(s.ticks for s in segments) + sum(s.held_out for s in segments) == history.expected
    assert sum(s.held_out for s in segments) == 0  # nothing faster than the rate happened
    _assert_well_formed(segments, history.readings[0][0])
    assert counters.rollovers == history.rollovers
    assert counters.resets == history.resets
    assert counters.spikes == counters.glitches == 0
    assert counters.out_of_order == history.late
    for segment in segments:
        gap = segment.end_ms - segment.start_ms > history.gap_ms
        assert (FLAG_ESTIMATED in segment.flags) == (gap and FLAG_RESET not in segment.flags)


@st.composite
def glitched(draw: st.DrawFn) -> tuple[History, list[tuple[int, int]], int]:
    """A history with rate and no late readings, and single huge glitches between its readings."""
    rates = st.sampled_from([Fraction(1, 1_000), Fraction(50, 3), Fraction(3)])
    history = draw(histories(moduli=st.just(None), rates=rates, late=False))
    readings: list[tuple[int, int]] = []
    glitches = 0
    following = [ts for ts, _ in history.readings[1:]] + [0]
    for (ts, value), next_ts in zip(history.readings, following, strict=True):
        readings.append((ts, value))
        if next_ts - ts >= 2 and draw(st.booleans()):
            glitch_ts = draw(st.integers(ts + 1, next_ts - 1))
            readings.append((glitch_ts, value + draw(st.integers(10**15, 10**18))))
            glitches += 1
    return history, readings, glitches


@settings(max_examples=300, deadline=None)
@given(glitched())
def test_single_glitches_do_not_change_the_energy(
    case: tuple[History, list[tuple[int, int]], int],
) -> None:
    history, readings, glitches = case
    segments, counters = _feed_all(history, readings, set())
    assert sum(s.ticks for s in segments) == history.expected
    assert sum(s.held_out for s in segments) == 0
    assert counters.glitches == glitches and counters.spikes == 0
    _assert_well_formed(segments, readings[0][0])


# --- PowerIntegrator ---------------------------------------------------------------------------


def test_constant_power_integrates_exactly() -> None:
    power = PowerIntegrator(gap_limit_ms=60_000)
    assert power.feed(0, 3_600.0) == []
    # 3600 W for 1 s = 1 Wh = 1e-3 kWh = 1000 ticks.
    assert power.feed(1_000, 3_600.0) == [
        Segment(0, 1_000, 1_000, flags=frozenset({FLAG_INTEGRATED}))
    ]


def test_the_sub_tick_remainder_is_carried() -> None:
    power = PowerIntegrator(gap_limit_ms=60_000)
    power.feed(0, 1.0)
    # 1 W for 1 s = 1000 W*ms: under a tick (3600 W*ms) three times, then the fourth completes it.
    ticks = [power.feed(t, 1.0)[0].ticks for t in (1_000, 2_000, 3_000, 4_000)]
    assert ticks == [0, 0, 0, 1]


def test_only_power_above_zero_counts() -> None:
    power = PowerIntegrator(gap_limit_ms=60_000)
    power.feed(0, -500.0)
    assert power.feed(1_000, -100.0)[0].ticks == 0
    # From -3600 W to +3600 W over 2 s: only the triangle above zero, 3600 W * 1 s / 2 = 500 ticks.
    power = PowerIntegrator(gap_limit_ms=60_000)
    power.feed(0, -3_600.0)
    assert power.feed(2_000, 3_600.0)[0].ticks == 500


def test_a_gap_reports_no_energy_and_keeps_the_carry() -> None:
    power = PowerIntegrator(gap_limit_ms=10_000)
    power.feed(0, 1.8)
    assert power.feed(1_000, 1.8)[0].ticks == 0  # 1800 W*ms carried
    # 19 s at 1.8 W would be 9 ticks; over a gap it is unknown, so none.
    assert power.feed(20_000, 1.8) == [Segment(1_000, 20_000, 0, flags=frozenset({FLAG_GAP}))]
    assert power.feed(21_000, 1.8)[0].ticks == 1  # 1800 carried + 1800 W*ms


def test_power_out_of_order_and_state() -> None:
    power = PowerIntegrator(gap_limit_ms=60_000)
    power.feed(0, 1_234.5)
    power.feed(700, 987.6)
    assert power.feed(700, 5.0) == [] and power.out_of_order == 1
    restored = PowerIntegrator(gap_limit_ms=60_000, state=json.loads(json.dumps(power.state())))
    assert restored.state() == power.state()
    assert restored.feed(1_500, 42.0) == power.feed(1_500, 42.0)
    with pytest.raises(ValueError):
        PowerIntegrator(gap_limit_ms=60_000, state={**power.state(), "carry": "4000"})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 120_000), st.floats(-5_000, 500_000, allow_nan=False)),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 100_000),
)
def test_integrated_total_is_the_exact_integral_rounded_down_once(
    steps: list[tuple[int, float]], gap_limit_ms: int
) -> None:
    power = PowerIntegrator(gap_limit_ms=gap_limit_ms)
    ts, watts = 0, steps[0][1]
    power.feed(ts, watts)
    exact = Fraction(0)
    segments: list[Segment] = []
    for dt, next_watts in steps[1:]:
        segments.extend(power.feed(ts + dt, next_watts))
        if dt <= gap_limit_ms:
            p0, p1 = Fraction(repr(watts)), Fraction(repr(next_watts))
            exact += _clipped_integral(p0, p1, dt)
        ts, watts = ts + dt, next_watts
    assert sum(s.ticks for s in segments) == math.floor(exact / 3_600)
    assert len(segments) == len(steps) - 1
    for segment in segments:
        gap = segment.end_ms - segment.start_ms > gap_limit_ms
        assert segment.flags == frozenset({FLAG_GAP if gap else FLAG_INTEGRATED})
        assert not (gap and segment.ticks)


def _clipped_integral(p0: Fraction, p1: Fraction, dt: int) -> Fraction:
    """The integral of max(0, line), split at the zero crossing into pieces of one sign."""
    if p0 == p1:
        return max(p0, Fraction(0)) * dt
    cross = min(max(p0 / (p0 - p1) * dt, Fraction(0)), Fraction(dt))  # where the line is zero
    mid = p0 + (p1 - p0) * cross / dt
    pieces = [(Fraction(0), p0, cross, mid), (cross, mid, Fraction(dt), p1)]
    return sum(
        ((a + b) * (t1 - t0) / 2 for t0, a, t1, b in pieces if a >= 0 and b >= 0), Fraction(0)
    )
