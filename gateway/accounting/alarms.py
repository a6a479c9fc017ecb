"""The alarm engine: pure logic that turns readings into raise/clear events (no I/O, no clock).

Everything is judged in reading time (`ts_ms` of what is fed in), never wall-clock time, and each
device must be fed in time order.

Limits (`LimitRule`, one alarm per rule and side, id `limit:<device>:<quantity>:above|below`):
- The condition is `value > above` (or `value < below`). It raises once it has held on every
  reading for at least `for_s` seconds of reading time: at the first reading whose timestamp is
  `for_s` after the first reading that met it (at once when `for_s` is 0). A reading that does not
  meet the condition restarts the timer.
- It clears at once on the first reading with `value <= above - hysteresis` (or
  `value >= below + hysteresis`); there is no minimum duration for clearing.
- A missing value (the snapshot failed, the quantity is absent, or it is flagged out_of_range or
  invalid: an implausible reading should not decide an alarm) neither raises nor clears. It stops
  the timer only when the gap it leaves is long: if the span from the last present reading to the
  next one, across missing readings, exceeds `for_s`, the timer restarts at that next reading. Plain
  spacing between successive good readings is never a gap, so a poll interval longer than `for_s`
  cannot keep an alarm from raising. Time the engine was not running (a restart) counts as missing.

Daily energy budget (`BudgetRule`, id `budget:<device>`): `energy()` gets the running total of the
local day; the alarm raises once per day when the total exceeds `daily_kwh`, and clears on the first
call with another day label (the clear names the day that ended). Devices without a rule are ignored.

Offline (id `offline:<device>`): raised on the transition to offline, cleared on the transition back.

One-shot events (id `event:<kind>:<device>`, state "event"): counter resets, rollovers, data gaps,
spikes and clock corrections reported by the energy engine; they are never active and need no clear.

`state()` is JSON-able and restores through `AlarmEngine(state=...)`: raised alarms stay raised
(no second raise, the clear still comes), as do pending timers, the budget day and offline devices.
Saved alarms whose rule is no longer configured are dropped without a clear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from drivers.snapshot import FLAG_INVALID, FLAG_OUT_OF_RANGE, OK, OUT_OF_RANGE, Snapshot
from drivers.vocabulary import vocabulary

SEVERITIES = ("info", "warning", "critical")
OFFLINE_SEVERITY = "warning"
STATE_VERSION = 1

# Severity and sentence of the one-shot events; other kinds get "warning" and a generic sentence.
EVENT_KINDS: dict[str, tuple[str, str]] = {
    "counter_reset": ("warning", "energy counter went backwards (meter reset or replaced)"),
    "counter_rollover": ("info", "energy counter rolled over past its maximum"),
    "data_gap": ("warning", "gap in the readings"),
    "spike": ("warning", "implausible jump in the readings (spike)"),
    "clock_corrected": ("info", "clock corrected"),
}
_STATEFUL_KINDS = ("limit", "budget", "offline")


@dataclass(frozen=True)
class LimitRule:
    device: str
    quantity: str
    above: float | None = None
    below: float | None = None
    hysteresis: float = 0.0
    for_s: float = 0.0
    severity: str = "warning"
    name: str = ""

    def __post_init__(self) -> None:
        where = f"limit on {self.device or '?'} {self.quantity or '?'}"
        if not self.device or not self.quantity:
            raise ValueError(f"{where}: device and quantity are required")
        if self.above is None and self.below is None:
            raise ValueError(f"{where}: set `above`, `below` or both")
        for key in ("above", "below", "hysteresis", "for_s"):
            number = getattr(self, key)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"{where}: `{key}` must be a finite number, not {number}")
        if self.hysteresis < 0:
            raise ValueError(f"{where}: `hysteresis` must be >= 0, not {self.hysteresis}")
        if self.for_s < 0:
            raise ValueError(f"{where}: `for_s` must be >= 0, not {self.for_s}")
        if self.above is not None and self.below is not None:
            if self.above <= self.below:
                raise ValueError(
                    f"{where}: `above` ({self.above}) must be greater than `below` ({self.below})"
                )
            if self.above - self.hysteresis < self.below + self.hysteresis:
                raise ValueError(
                    f"{where}: `hysteresis` ({self.hysteresis}) is more than half the band between"
                    f" `below` and `above`, so both alarms could be raised at once"
                )
        if self.severity not in SEVERITIES:
            raise ValueError(f"{where}: `severity` must be one of {', '.join(SEVERITIES)}")
        if not self.name:
            sides = [f"{side} {_number(limit)}" for side, limit in self.sides()]
            object.__setattr__(self, "name", f"{self.device} {self.quantity} {' '.join(sides)}")

    def sides(self) -> list[tuple[str, float]]:
        out = [] if self.above is None else [("above", self.above)]
        return out + ([] if self.below is None else [("below", self.below)])


@dataclass(frozen=True)
class BudgetRule:
    device: str
    daily_kwh: Decimal
    severity: str = "warning"

    def __post_init__(self) -> None:
        if not self.device:
            raise ValueError("energy budget: device is required")
        if not isinstance(self.daily_kwh, Decimal):
            object.__setattr__(self, "daily_kwh", Decimal(str(self.daily_kwh)))
        if not self.daily_kwh.is_finite() or self.daily_kwh <= 0:
            raise ValueError(f"energy budget of {self.device}: `daily_kwh` must be > 0")
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"energy budget of {self.device}: `severity` must be one of {', '.join(SEVERITIES)}"
            )


@dataclass(frozen=True)
class AlarmEvent:
    id: str
    state: str  # "raised" | "cleared" | "event"
    kind: str
    device: str
    ts_ms: int
    severity: str
    message: str
    detail: dict[str, object] = field(default_factory=dict)

    def record(self) -> dict[str, object]:
        """The JSON record published on the alarms topic."""
        return {
            "alarm": self.id,
            "state": self.state,
            "kind": self.kind,
            "device": self.device,
            "ts": self.ts_ms,
            "severity": self.severity,
            "message": self.message,
            "detail": dict(self.detail),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> AlarmEvent:
        try:
            detail = record["detail"]
            fields = [record[key] for key in ("alarm", "state", "kind", "device", "severity")]
            message, ts = record["message"], record["ts"]
        except KeyError as exc:
            raise ValueError(f"alarm record without {exc}") from None
        if not all(isinstance(text, str) for text in fields) or not isinstance(message, str):
            raise ValueError(f"alarm record with a non-text field: {record!r}")
        if not isinstance(ts, int) or not isinstance(detail, dict):
            raise ValueError(f"alarm record with a bad `ts` or `detail`: {record!r}")
        alarm, state, kind, device, severity = (str(text) for text in fields)
        return cls(alarm, state, kind, device, ts, severity, message, dict(detail))


@dataclass
class _Limit:
    """One side of one limit rule and where it stands."""

    rule: LimitRule
    side: str  # "above" | "below"
    since_ms: int | None = None  # first reading of the current run that met the condition
    last_ms: int | None = None  # last reading with a value
    gap: bool = False  # a value has been missing since `last_ms`
    raised: AlarmEvent | None = None

    @property
    def id(self) -> str:
        return f"limit:{self.rule.device}:{self.rule.quantity}:{self.side}"

    @property
    def threshold(self) -> float:
        limit = self.rule.above if self.side == "above" else self.rule.below
        assert limit is not None
        return limit

    @property
    def clear_at(self) -> float:
        hysteresis = self.rule.hysteresis
        return self.threshold - hysteresis if self.side == "above" else self.threshold + hysteresis

    def met(self, value: float) -> bool:
        return value > self.threshold if self.side == "above" else value < self.threshold

    def cleared(self, value: float) -> bool:
        return value <= self.clear_at if self.side == "above" else value >= self.clear_at

    def reading(self, ts_ms: int, value: float) -> AlarmEvent | None:
        for_ms = self.rule.for_s * 1000
        # A clock stepped backwards makes the run's length meaningless: start it again.
        long_gap = self.last_ms is not None and (
            ts_ms < self.last_ms or (self.gap and ts_ms - self.last_ms > for_ms)
        )
        self.last_ms, self.gap = ts_ms, False
        if self.raised is not None:
            if not self.cleared(value):
                return None
            raised, self.raised, self.since_ms = self.raised, None, None
            return self._clear(ts_ms, value, raised)
        if not self.met(value):
            self.since_ms = None
            return None
        if self.since_ms is None or long_gap:
            self.since_ms = ts_ms
        if ts_ms - self.since_ms < for_ms:
            return None
        self.raised = self._raise(ts_ms, value, self.since_ms)
        return self.raised

    def missing(self) -> None:
        if self.last_ms is not None:
            self.gap = True

    def _raise(self, ts_ms: int, value: float, since_ms: int) -> AlarmEvent:
        rule = self.rule
        held = f" for {_duration(ts_ms - since_ms)}" if rule.for_s > 0 else ""
        message = (
            f"{rule.device}: {_label(rule.quantity)} {_amount(value, rule.quantity)} {self.side}"
            f" {_amount(self.threshold, rule.quantity)}{held}"
        )
        detail: dict[str, object] = {
            "rule": rule.name,
            "quantity": rule.quantity,
            "value": value,
            "threshold": self.threshold,
            "hysteresis": rule.hysteresis,
            "for_s": rule.for_s,
            "since_ms": since_ms,
        }
        return AlarmEvent(
            self.id, "raised", "limit", rule.device, ts_ms, rule.severity, message, detail
        )

    def _clear(self, ts_ms: int, value: float, raised: AlarmEvent) -> AlarmEvent:
        rule = self.rule
        message = (
            f"{rule.device}: {_label(rule.quantity)} back to {_amount(value, rule.quantity)},"
            f" no longer {self.side} {_amount(self.threshold, rule.quantity)}"
            f" (alarm lasted {_duration(ts_ms - raised.ts_ms)})"
        )
        detail: dict[str, object] = {
            "rule": rule.name,
            "quantity": rule.quantity,
            "value": value,
            "threshold": self.threshold,
            "clear_at": self.clear_at,
            "raised_ms": raised.ts_ms,
        }
        return AlarmEvent(
            self.id, "cleared", "limit", rule.device, ts_ms, rule.severity, message, detail
        )


@dataclass
class _Budget:
    rule: BudgetRule
    day: str | None = None
    day_kwh: Decimal = Decimal(0)
    raised: AlarmEvent | None = None

    def energy(self, day: str, day_kwh: Decimal, ts_ms: int) -> list[AlarmEvent]:
        rule, events = self.rule, []
        alarm = f"budget:{rule.device}"
        if self.day is not None and day != self.day and self.raised is not None:
            message = (
                f"{rule.device}: day {self.day} ended at {_kwh(self.day_kwh)},"
                f" over its daily budget of {_kwh(rule.daily_kwh)}; new day {day}"
            )
            detail: dict[str, object] = {
                "day": self.day,
                "day_kwh": str(self.day_kwh),
                "budget_kwh": str(rule.daily_kwh),
                "new_day": day,
                "raised_ms": self.raised.ts_ms,
            }
            events.append(
                AlarmEvent(
                    alarm, "cleared", "budget", rule.device, ts_ms, rule.severity, message, detail
                )
            )
            self.raised = None
        self.day, self.day_kwh = day, day_kwh
        if self.raised is None and day_kwh > rule.daily_kwh:
            message = (
                f"{rule.device}: {_kwh(day_kwh)} used on {day},"
                f" over its daily budget of {_kwh(rule.daily_kwh)}"
            )
            detail = {"day": day, "day_kwh": str(day_kwh), "budget_kwh": str(rule.daily_kwh)}
            self.raised = AlarmEvent(
                alarm, "raised", "budget", rule.device, ts_ms, rule.severity, message, detail
            )
            events.append(self.raised)
        return events


class AlarmEngine:
    def __init__(
        self,
        limits: Sequence[LimitRule] = (),
        budgets: Sequence[BudgetRule] = (),
        state: Mapping[str, object] | None = None,
    ) -> None:
        self._limits: dict[str, _Limit] = {}
        self._by_device: dict[str, list[_Limit]] = {}
        for rule in limits:
            for side, _threshold in rule.sides():
                tracker = _Limit(rule, side)
                if tracker.id in self._limits:
                    raise ValueError(f"two limits {side} on {rule.device} {rule.quantity}")
                self._limits[tracker.id] = tracker
                self._by_device.setdefault(rule.device, []).append(tracker)
        self._budgets: dict[str, _Budget] = {}
        for budget in budgets:
            if budget.device in self._budgets:
                raise ValueError(f"two energy budgets for {budget.device}")
            self._budgets[budget.device] = _Budget(budget)
        self._online: dict[str, bool] = {}
        self._offline: dict[str, AlarmEvent] = {}
        if state is not None:
            self._restore(state)

    def snapshot(self, snapshot: Snapshot) -> list[AlarmEvent]:
        events = []
        readable = snapshot.quality in (OK, OUT_OF_RANGE)
        for tracker in self._by_device.get(snapshot.device, ()):
            quantity = tracker.rule.quantity
            value = snapshot.values.get(quantity) if readable else None
            flagged = snapshot.flags.get(quantity) in (FLAG_OUT_OF_RANGE, FLAG_INVALID)
            if value is None or flagged or not math.isfinite(value):
                tracker.missing()
            elif (event := tracker.reading(snapshot.ts_ms, value)) is not None:
                events.append(event)
        return events

    def energy(self, device: str, day_label: str, day_kwh: Decimal, ts_ms: int) -> list[AlarmEvent]:
        budget = self._budgets.get(device)
        return [] if budget is None else budget.energy(day_label, day_kwh, ts_ms)

    def device_status(self, device: str, ts_ms: int, online: bool) -> list[AlarmEvent]:
        self._online[device] = online
        alarm = f"offline:{device}"
        raised = self._offline.get(device)
        if not online and raised is None:
            message = f"{device}: not answering (offline)"
            self._offline[device] = AlarmEvent(
                alarm, "raised", "offline", device, ts_ms, OFFLINE_SEVERITY, message, {}
            )
            return [self._offline[device]]
        if online and raised is not None:
            del self._offline[device]
            message = f"{device}: answering again after {_duration(ts_ms - raised.ts_ms)} offline"
            detail: dict[str, object] = {"offline_since_ms": raised.ts_ms}
            return [
                AlarmEvent(
                    alarm, "cleared", "offline", device, ts_ms, OFFLINE_SEVERITY, message, detail
                )
            ]
        return []

    def event(
        self, device: str, kind: str, ts_ms: int, detail: Mapping[str, object]
    ) -> list[AlarmEvent]:
        if not kind or kind in _STATEFUL_KINDS:
            raise ValueError(f"not a one-shot event kind: {kind!r}")
        severity, sentence = EVENT_KINDS.get(kind, ("warning", kind.replace("_", " ")))
        quantity = detail.get("quantity")
        where = f" ({quantity})" if isinstance(quantity, str) else ""
        clean = {str(key): _jsonable(value) for key, value in detail.items()}
        message = f"{device}: {sentence}{where}"
        return [
            AlarmEvent(
                f"event:{kind}:{device}", "event", kind, device, ts_ms, severity, message, clean
            )
        ]

    def active(self) -> list[AlarmEvent]:
        raised = [tracker.raised for tracker in self._limits.values()]
        raised += [budget.raised for budget in self._budgets.values()]
        events = [event for event in raised if event is not None] + list(self._offline.values())
        return sorted(events, key=lambda event: (event.ts_ms, event.id))

    def state(self) -> dict[str, object]:
        def record(event: AlarmEvent | None) -> dict[str, object] | None:
            return None if event is None else event.record()

        limits = {
            alarm: {"since_ms": t.since_ms, "last_ms": t.last_ms, "raised": record(t.raised)}
            for alarm, t in self._limits.items()
            if t.last_ms is not None or t.raised is not None
        }
        budgets = {
            device: {"day": b.day, "day_kwh": str(b.day_kwh), "raised": record(b.raised)}
            for device, b in self._budgets.items()
            if b.day is not None
        }
        offline = {
            device: {"online": online, "raised": record(self._offline.get(device))}
            for device, online in self._online.items()
        }
        return {"version": STATE_VERSION, "limits": limits, "budgets": budgets, "offline": offline}

    def _restore(self, state: Mapping[str, object]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"alarm state of unknown version {state.get('version')!r}")
        for alarm, saved in _table(state.get("limits", {}), "limits").items():
            tracker = self._limits.get(alarm)
            if tracker is not None:
                entry = _table(saved, alarm)
                tracker.since_ms = _optional_int(entry, "since_ms")
                tracker.last_ms = _optional_int(entry, "last_ms")
                tracker.gap = tracker.last_ms is not None  # the time we were down is missing
                tracker.raised = _optional_event(entry)
        for device, saved in _table(state.get("budgets", {}), "budgets").items():
            budget = self._budgets.get(device)
            if budget is not None:
                entry = _table(saved, device)
                day, kwh = entry.get("day"), entry.get("day_kwh")
                if not isinstance(day, str) or not isinstance(kwh, str):
                    raise ValueError(f"alarm state: bad budget entry for {device}")
                budget.day, budget.day_kwh = day, Decimal(kwh)
                budget.raised = _optional_event(entry)
        for device, saved in _table(state.get("offline", {}), "offline").items():
            entry = _table(saved, device)
            online = entry.get("online")
            if not isinstance(online, bool):
                raise ValueError(f"alarm state: bad offline entry for {device}")
            self._online[device] = online
            if (event := _optional_event(entry)) is not None:
                self._offline[device] = event


def _table(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"alarm state: `{what}` is not a table")
    return value


def _optional_int(entry: Mapping[str, object], key: str) -> int | None:
    value = entry.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"alarm state: `{key}` is not an integer: {value!r}")
    return value


def _optional_event(entry: Mapping[str, object]) -> AlarmEvent | None:
    raised = entry.get("raised")
    if raised is None:
        return None
    if not isinstance(raised, Mapping):
        raise ValueError(f"alarm state: bad raised alarm {raised!r}")
    return AlarmEvent.from_record(raised)


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)  # Decimal (exact, as the ledger keeps it), NaN, anything else


def _number(value: float) -> str:
    """A reading as an electrician would write it: 262.1, 0.95, 230."""
    digits = 1 if abs(value) >= 100 else 2 if abs(value) >= 1 else 3
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _unit(quantity: str) -> str:
    known = vocabulary().get(quantity)
    return "" if known is None else known.unit


def _label(quantity: str) -> str:
    """`voltage_l1_v` -> `voltage L1`: the name without its unit suffix."""
    words = quantity.split("_")
    if _unit(quantity) and len(words) > 1:
        words = words[:-1]
    return " ".join(word.upper() if word in ("l1", "l2", "l3") else word for word in words)


def _amount(value: float, quantity: str) -> str:
    unit = _unit(quantity)
    if unit in ("W", "var", "VA") and abs(value) >= 1000:
        value, unit = value / 1000, "k" + unit
    return f"{_number(value)} {unit}" if unit else _number(value)


def _kwh(value: Decimal) -> str:
    return f"{_number(float(value))} kWh"


def _duration(ms: int) -> str:
    seconds = max(ms, 0) / 1000
    if seconds < 90:
        return f"{_number(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{_number(round(seconds / 3600, 1))} h"
