"""The alarm engine: limits with hysteresis and duration, budgets, offline, one-shots, state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.snapshot import FLAG_OUT_OF_RANGE, OK, OUT_OF_RANGE, TIMEOUT, Snapshot
from gateway.accounting.alarms import AlarmEngine, AlarmEvent, BudgetRule, LimitRule

DEV = "compressor-1"
POWER = "active_power_w"
ABOVE_ID = f"limit:{DEV}:{POWER}:above"


def reading(ts_s: float, value: float | None, quantity: str = POWER, device: str = DEV) -> Snapshot:
    """A snapshot at `ts_s` seconds; None is a failed read."""
    if value is None:
        return Snapshot(device, int(ts_s * 1000), TIMEOUT, error="timeout")
    return Snapshot(device, int(ts_s * 1000), OK, values={quantity: value})


def feed(engine: AlarmEngine, values: Sequence[tuple[float, float | None]]) -> list[AlarmEvent]:
    return [event for ts, value in values for event in engine.snapshot(reading(ts, value))]


def states(events: list[AlarmEvent]) -> list[tuple[str, int]]:
    return [(event.state, event.ts_ms) for event in events]


# --- limits -----------------------------------------------------------------------------------


def test_hysteresis_prevents_flapping() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=250_000, hysteresis=10_000)])
    wobble = [250_100.0, 245_000.0] * 10  # between above - hysteresis/2 and above + a little
    events = feed(engine, list(enumerate(wobble)))
    assert states(events) == [("raised", 0)]
    assert feed(engine, [(20, 240_001.0)]) == []  # not back by the full hysteresis yet
    cleared = feed(engine, [(21, 240_000.0)])
    assert states(cleared) == [("cleared", 21_000)]
    assert feed(engine, [(22, 245_000.0)]) == []
    assert states(feed(engine, [(23, 250_001.0)])) == [("raised", 23_000)]


def test_raise_and_clear_records_read_well() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=250_000, for_s=300)])
    events = feed(engine, [(t, 262_100.0) for t in range(0, 301, 60)])
    (raised,) = events
    assert raised.message == "compressor-1: active power 262.1 kW above 250 kW for 5 min"
    record = raised.record()
    assert record["alarm"] == ABOVE_ID and record["state"] == "raised" and record["ts"] == 300_000
    assert record["kind"] == "limit" and record["severity"] == "warning"
    assert raised.detail["since_ms"] == 0 and raised.detail["threshold"] == 250_000
    assert raised.detail["rule"] == "compressor-1 active_power_w above 250000"
    json.dumps(record)
    (cleared,) = feed(engine, [(420, 900.0)])
    assert cleared.message == (
        "compressor-1: active power back to 900 W, no longer above 250 kW (alarm lasted 2 min)"
    )
    assert cleared.detail["raised_ms"] == 300_000


def test_short_excursions_do_not_raise() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100, for_s=300)])
    for start in (0, 1000, 2000):
        run = [(start + t, 150.0) for t in range(0, 300, 10)]  # 290 s above
        assert feed(engine, [*run, (start + 300, 50.0)]) == []
    assert engine.active() == []


def test_continuous_excursion_raises_at_exactly_for_s() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100, for_s=300)])
    events = feed(engine, [(1000 + t, 150.0) for t in range(0, 400, 10)])
    assert states(events) == [("raised", 1_300_000)]


def test_poll_interval_longer_than_for_s_still_raises() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100, for_s=30)])
    assert states(feed(engine, [(0, 150.0), (60, 150.0)])) == [("raised", 60_000)]


def test_short_gap_keeps_the_timer_long_gap_restarts_it() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100, for_s=300)])
    short = [(0, 150.0), (100, 150.0), (150, None), (200, None), (250, 150.0), (300, 150.0)]
    assert states(feed(engine, short)) == [("raised", 300_000)]

    engine = AlarmEngine([LimitRule(DEV, POWER, above=100, for_s=300)])
    long = [(0, 150.0), (100, 150.0), (200, None), (500, 150.0), (700, 150.0), (800, 150.0)]
    assert states(feed(engine, long)) == [("raised", 800_000)]  # 300 s after 500


def test_missing_values_neither_raise_nor_clear() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100)])
    assert len(feed(engine, [(0, 150.0)])) == 1
    absent = Snapshot(DEV, 1000, OK, values={"voltage_l1_v": 230.0})
    flagged = Snapshot(DEV, 2000, OUT_OF_RANGE, {POWER: 1e9}, flags={POWER: FLAG_OUT_OF_RANGE})
    assert engine.snapshot(absent) == []
    assert engine.snapshot(flagged) == []
    assert feed(engine, [(3, None), (4, float("nan"))]) == []
    assert [event.id for event in engine.active()] == [ABOVE_ID]
    assert feed(engine, [(5, 10.0)])[0].state == "cleared"


def test_below_limit_with_hysteresis() -> None:
    rule = LimitRule("meter-3", "voltage_l1_v", below=207, hysteresis=3)
    engine = AlarmEngine([rule])
    snaps = [reading(t, v, "voltage_l1_v", "meter-3") for t, v in enumerate([230, 206, 209, 205])]
    events = [event for snap in snaps for event in engine.snapshot(snap)]
    assert states(events) == [("raised", 1000)]
    assert events[0].id == "limit:meter-3:voltage_l1_v:below"
    assert events[0].message == "meter-3: voltage L1 206 V below 207 V"
    (cleared,) = engine.snapshot(reading(9, 210, "voltage_l1_v", "meter-3"))
    assert cleared.state == "cleared" and cleared.detail["clear_at"] == 210


def test_both_sides_are_separate_alarms() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100, below=10)])
    events = feed(engine, [(0, 5.0), (1, 50.0), (2, 150.0)])
    assert [(e.id.rsplit(":", 1)[1], e.state) for e in events] == [
        ("below", "raised"),
        ("below", "cleared"),
        ("above", "raised"),
    ]


def test_other_devices_and_quantities_are_ignored() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100)])
    assert engine.snapshot(reading(0, 1e6, device="press-2")) == []
    assert engine.snapshot(reading(0, 1e6, quantity="active_power_l1_w")) == []
    assert engine.snapshot(reading(0, 1e6)) != []


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({}, "set `above`, `below` or both"),
        ({"above": 100, "hysteresis": -1}, "`hysteresis` must be >= 0"),
        ({"above": 100, "for_s": -5}, "`for_s` must be >= 0"),
        ({"above": 10, "below": 10}, "must be greater than `below`"),
        ({"above": 100, "below": 10, "hysteresis": 50}, "more than half the band"),
        ({"above": float("nan")}, "finite"),
        ({"above": 1, "severity": "urgent"}, "`severity` must be one of"),
    ],
)
def test_limit_rule_validation(kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match="limit on compressor-1 active_power_w") as info:
        LimitRule(DEV, POWER, **kwargs)  # type: ignore[arg-type]
    assert complaint in str(info.value)


def test_duplicate_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="two limits above"):
        AlarmEngine([LimitRule(DEV, POWER, above=1), LimitRule(DEV, POWER, above=2)])
    with pytest.raises(ValueError, match="two energy budgets"):
        AlarmEngine(budgets=[BudgetRule(DEV, Decimal(1)), BudgetRule(DEV, Decimal(2))])
    with pytest.raises(ValueError, match="must be > 0"):
        BudgetRule(DEV, Decimal(0))


# --- budgets, offline, one-shots ---------------------------------------------------------------


def test_budget_raises_once_per_day_and_clears_on_day_change() -> None:
    engine = AlarmEngine(budgets=[BudgetRule("press-2", Decimal("1000"))])
    assert engine.energy("press-2", "2024-05-02", Decimal("999.9"), 1) == []
    assert engine.energy("press-2", "2024-05-02", Decimal("1000"), 2) == []  # at, not over
    (raised,) = engine.energy("press-2", "2024-05-02", Decimal("1000.1"), 3)
    assert raised.id == "budget:press-2" and raised.state == "raised"
    assert raised.detail == {"day": "2024-05-02", "day_kwh": "1000.1", "budget_kwh": "1000"}
    assert engine.energy("press-2", "2024-05-02", Decimal("1500"), 4) == []
    (cleared,) = engine.energy("press-2", "2024-05-03", Decimal("0.5"), 5)
    assert cleared.state == "cleared" and cleared.detail["day"] == "2024-05-02"
    assert cleared.detail["day_kwh"] == "1500" and cleared.detail["new_day"] == "2024-05-03"
    assert "2024-05-02 ended at 1500 kWh" in cleared.message
    assert engine.active() == []
    assert engine.energy("press-2", "2024-05-03", Decimal("1001"), 6)[0].state == "raised"
    assert engine.energy("other", "2024-05-03", Decimal("1e9"), 6) == []


def test_budget_already_over_on_the_first_call_of_a_new_day() -> None:
    engine = AlarmEngine(budgets=[BudgetRule("press-2", Decimal("1"))])
    engine.energy("press-2", "d1", Decimal("2"), 1)
    events = engine.energy("press-2", "d2", Decimal("3"), 2)
    assert [(e.state, e.detail["day"]) for e in events] == [("cleared", "d1"), ("raised", "d2")]


def test_offline_online_transitions() -> None:
    engine = AlarmEngine()
    assert engine.device_status("meter-3", 0, online=True) == []
    (raised,) = engine.device_status("meter-3", 1000, online=False)
    assert (raised.id, raised.state, raised.kind) == ("offline:meter-3", "raised", "offline")
    assert engine.device_status("meter-3", 2000, online=False) == []
    assert engine.active() == [raised]
    (cleared,) = engine.device_status("meter-3", 601_000, online=True)
    assert cleared.state == "cleared" and cleared.message == (
        "meter-3: answering again after 10 min offline"
    )
    assert engine.device_status("meter-3", 602_000, online=True) == []
    assert engine.active() == []


def test_one_shot_events() -> None:
    engine = AlarmEngine()
    detail = {"quantity": "active_energy_import_kwh", "before": Decimal("12.5"), "after": 0.1}
    (event,) = engine.event("meter-3", "counter_reset", 5000, detail)
    assert event.id == "event:counter_reset:meter-3" and event.state == "event"
    assert event.detail == {"quantity": "active_energy_import_kwh", "before": "12.5", "after": 0.1}
    assert "active_energy_import_kwh" in event.message
    json.dumps(event.record())
    assert engine.event("meter-3", "counter_reset", 6000, {})[0].ts_ms == 6000  # never deduplicated
    assert engine.event("meter-3", "clock_corrected", 7000, {})[0].severity == "info"
    assert engine.active() == []
    with pytest.raises(ValueError, match="one-shot"):
        engine.event("meter-3", "offline", 8000, {})


# --- state ------------------------------------------------------------------------------------


def restarted(
    engine: AlarmEngine, limits: Sequence[LimitRule], budgets: Sequence[BudgetRule] = ()
) -> AlarmEngine:
    saved = json.loads(json.dumps(engine.state()))
    return AlarmEngine(limits, budgets, state=saved)


def test_state_round_trip_keeps_raised_alarms() -> None:
    limits = [LimitRule(DEV, POWER, above=100, hysteresis=10)]
    budgets = [BudgetRule("press-2", Decimal("10"))]
    engine = AlarmEngine(limits, budgets)
    feed(engine, [(0, 150.0)])
    engine.energy("press-2", "d1", Decimal("11"), 1000)
    engine.device_status("meter-3", 2000, online=False)
    before = engine.active()
    assert len(before) == 3

    again = restarted(engine, limits, budgets)
    assert again.active() == before
    assert feed(again, [(100, 150.0), (101, 95.0)]) == []  # no re-raise, hysteresis remembered
    assert again.energy("press-2", "d1", Decimal("12"), 102_000) == []
    assert again.device_status("meter-3", 103_000, online=False) == []
    assert feed(again, [(104, 90.0)])[0].state == "cleared"
    assert again.energy("press-2", "d2", Decimal("0"), 105_000)[0].detail["day"] == "d1"
    assert again.device_status("meter-3", 106_000, online=True)[0].state == "cleared"
    assert again.active() == []


def test_state_keeps_pending_timer_but_downtime_counts_as_a_gap() -> None:
    limits = [LimitRule(DEV, POWER, above=100, for_s=300)]
    engine = AlarmEngine(limits)
    feed(engine, [(0, 150.0), (200, 150.0)])
    assert states(feed(restarted(engine, limits), [(300, 150.0)])) == [("raised", 300_000)]
    assert feed(restarted(engine, limits), [(600, 150.0), (800, 150.0)]) == []


def test_state_of_removed_rules_is_dropped_and_bad_state_refused() -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100)])
    feed(engine, [(0, 150.0)])
    assert restarted(engine, [LimitRule(DEV, POWER, below=1)]).active() == []
    with pytest.raises(ValueError, match="version"):
        AlarmEngine(state={"version": 99})
    with pytest.raises(ValueError, match="limits"):
        AlarmEngine(state={"version": 1, "limits": []})


# --- properties -------------------------------------------------------------------------------

values = st.lists(st.one_of(st.none(), st.floats(-50, 250, allow_nan=False)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    values=values,
    hysteresis=st.sampled_from([0.0, 5.0, 30.0]),
    for_s=st.sampled_from([0.0, 3.0, 10.0]),
    step_s=st.sampled_from([1, 2, 7]),
)
def test_raises_and_clears_alternate(
    values: list[float | None], hysteresis: float, for_s: float, step_s: int
) -> None:
    engine = AlarmEngine(
        [LimitRule(DEV, POWER, above=150, below=0, hysteresis=hysteresis, for_s=for_s)]
    )
    events = feed(engine, [(i * step_s, value) for i, value in enumerate(values)])
    last_state: dict[str, str] = {}
    for event in events:
        assert last_state.get(event.id, "cleared") != event.state  # never two raises in a row
        last_state[event.id] = event.state
    still_raised = {alarm for alarm, state in last_state.items() if state == "raised"}
    assert {event.id for event in engine.active()} == still_raised


@settings(max_examples=200, deadline=None)
@given(values=values)
def test_without_hysteresis_or_duration_raised_exactly_when_above(
    values: list[float | None],
) -> None:
    engine = AlarmEngine([LimitRule(DEV, POWER, above=100)])
    last: float | None = None
    for i, value in enumerate(values):
        engine.snapshot(reading(i, value))
        last = value if value is not None else last
        assert (engine.active() != []) == (last is not None and last > 100)
