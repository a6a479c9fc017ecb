"""Accounting as the daemon runs it: readings in, interval results and alarms out.

The daemon hands every poll cycle's snapshots to `observe` before it commits them, and calls
`checkpoint` inside a buffer transaction when `checkpoint_due` says so. Clock handling:

- While the kernel says the clock is not synchronised (a Pi has no real-time clock), readings are
  flagged `clock_unsynced` and kept out of the ledger: each device's latest reading and the time
  of every reading are held (a few bytes each, at most `MAX_HELD_S` of them).
- When synchronisation steps the clock, the held timestamps are corrected by the step, the
  correction is published on the alarms stream (`clock_corrected`), and the held readings enter the
  ledger at their corrected times: a counter's energy over the whole wait is kept, spread over it.
- If the clock never synchronises within `MAX_HELD_S`, readings enter with the times they have.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from buffer.canonical import canonical
from drivers.snapshot import OK, OUT_OF_RANGE, Snapshot
from gateway.accounting.alarms import AlarmEngine, AlarmEvent
from gateway.accounting.energy import (
    FLAG_ESTIMATED,
    FLAG_GAP,
    FLAG_RESET,
    FLAG_ROLLOVER,
    FLAG_SPIKE,
)
from gateway.accounting.indicators import KWH, completeness
from gateway.accounting.ledger import Ledger
from gateway.accounting.results import Publisher, amount, expected_readings, kwh_of, meter_total
from gateway.accounting.settings import AccountingConfig
from gateway.clock import ClockWatch, Correction, correction_event, stamp

log = logging.getLogger("cgw.accounting")

INTERVALS = "intervals"
ALARMS = "alarms"
MAX_HELD_S = 6 * 3600
EVENT_KINDS = (
    (FLAG_RESET, "counter_reset"),
    (FLAG_ROLLOVER, "counter_rollover"),
    (FLAG_SPIKE, "spike"),
    (FLAG_ESTIMATED, "data_gap"),
    (FLAG_GAP, "data_gap"),
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Held:
    """Readings taken before the clock was synchronised: every time, and each device's first
    and latest reading (a counter's energy over the wait lies between those two)."""

    def __init__(self) -> None:
        self.times: dict[str, array[int]] = {}
        self.first: dict[str, Snapshot] = {}
        self.latest: dict[str, Snapshot] = {}
        self.since_mono = time.monotonic()

    def add(self, snapshot: Snapshot) -> None:
        self.times.setdefault(snapshot.device, array("q")).append(snapshot.ts_ms)
        self.first.setdefault(snapshot.device, snapshot)
        self.latest[snapshot.device] = snapshot

    def shift(self, correction: Correction) -> None:
        for device, times in self.times.items():
            self.times[device] = array("q", (correction.apply(t) for t in times))
        for held in (self.first, self.latest):
            for device, snapshot in held.items():
                held[device] = replace(snapshot, ts_ms=correction.apply(snapshot.ts_ms))

    def __len__(self) -> int:
        return sum(len(t) for t in self.times.values())


class Accounting:
    def __init__(
        self,
        settings: AccountingConfig,
        timezone: str,
        db: sqlite3.Connection,
        clock: ClockWatch,
    ) -> None:
        self.settings = settings
        self.ledger = Ledger(settings, timezone, db)
        self.grid = self.ledger.grid
        self.publisher = Publisher(settings, self.ledger, self.grid)
        try:
            self.alarms = AlarmEngine(settings.limits, settings.budgets, self.ledger.saved_alarms)
        except ValueError as exc:
            log.warning("saved alarm state not usable (%s): starting without it", exc)
            self.alarms = AlarmEngine(settings.limits, settings.budgets)
        self.clock = clock
        self.failures: dict[str, int] = {
            e.device: settings.offline_after for e in self.alarms.active() if e.kind == "offline"
        }
        self.held: Held | None = None
        self.gave_up_waiting = False
        self.alarm_records: list[bytes] = []
        self._next_checkpoint = time.monotonic() + settings.checkpoint_s
        self.completeness: dict[str, object] = {}

    # -- each poll cycle --------------------------------------------------------------

    def observe(self, batch: Sequence[Snapshot]) -> Correction | None:
        """Stamp (see `gateway.clock.stamp`) and account a poll cycle's snapshots, before they
        are committed. Returns the clock step found, if any (published on the alarms stream)."""
        correction = stamp(self.clock, batch)
        if correction is not None:
            self.alarm_records.append(canonical(correction_event(correction)))
            if self.held is not None:
                self.held.shift(correction)
        if not self.timestamps_trusted:
            if self.held is None:
                self.held = Held()
            for snapshot in batch:
                self.held.add(snapshot)
            if time.monotonic() - self.held.since_mono > MAX_HELD_S:
                log.warning(
                    "clock still not synchronised after %d h: accounting goes on with "
                    "the clock as it is",
                    MAX_HELD_S // 3600,
                )
                self.gave_up_waiting = True
                self._release()
            self._alarms_of(batch)
            return correction
        if self.held is not None:
            self._release()
        self.ledger.feed(batch)
        self._alarms_of(batch)
        self._events()
        return correction

    def _release(self) -> None:
        """Held readings enter the ledger: each device's first and latest as readings (the
        counter's energy over the wait), the other held times as received readings."""
        held, self.held = self.held, None
        if held is None:
            return
        ends = [*held.first.values()]
        ends += (s for device, s in held.latest.items() if s is not held.first[device])
        self.ledger.feed(sorted(ends, key=lambda s: s.ts_ms))
        # Spreading the wait is estimation by design, not a gap in the readings: no data_gap.
        self.ledger.events = [(m, s) for m, s in self.ledger.events if s.flags - {FLAG_ESTIMATED}]
        for device, times in held.times.items():
            fed = {held.first[device].ts_ms, held.latest[device].ts_ms}
            self.ledger.count_held(device, [t for t in times if t not in fed])
        self._events()

    def _alarms_of(self, batch: Sequence[Snapshot]) -> None:
        events: list[AlarmEvent] = []
        for snapshot in batch:
            events += self.alarms.snapshot(snapshot)
            if snapshot.quality in (OK, OUT_OF_RANGE):
                if not self.failures:
                    continue
                if self.failures.pop(snapshot.device, 0) >= self.settings.offline_after:
                    events += self.alarms.device_status(snapshot.device, snapshot.ts_ms, True)
            else:
                failures = self.failures.get(snapshot.device, 0) + 1
                self.failures[snapshot.device] = failures
                if failures == self.settings.offline_after:
                    events += self.alarms.device_status(snapshot.device, snapshot.ts_ms, False)
        self._publish_alarms(events)

    def _events(self) -> None:
        events: list[AlarmEvent] = []
        for meter, segment in self.ledger.events:
            for flag, kind in EVENT_KINDS:
                if flag in segment.flags:
                    events += self.alarms.event(
                        meter.device,
                        kind,
                        segment.end_ms,
                        {
                            "quantity": meter.quantity,
                            "from_ms": segment.start_ms,
                            "until_ms": segment.end_ms,
                            "energy": float(amount(meter, segment.ticks)),
                            "held_out": float(amount(meter, segment.held_out)),
                        },
                    )
                    break
        self.ledger.events.clear()
        self._publish_alarms(events)

    def _publish_alarms(self, events: Sequence[AlarmEvent]) -> None:
        for event in events:
            level = (
                logging.INFO
                if event.state == "cleared" or event.severity == "info"
                else logging.WARNING
            )
            log.log(
                level,
                "alarm %s %s: %s",
                event.state,
                event.id,
                event.message,
                extra={"device": event.device or None},
            )
            self.alarm_records.append(canonical(event.record()))

    # -- checkpoints ------------------------------------------------------------------

    @property
    def timestamps_trusted(self) -> bool:
        """Readings go into the ledger: the clock is synchronised, or waiting has been given up."""
        return self.clock.synced or self.gave_up_waiting

    def checkpoint_due(self, now_mono: float, wall_ms: int) -> bool:
        return (
            bool(self.alarm_records)
            or now_mono >= self._next_checkpoint
            or (self.timestamps_trusted and self.ledger.close_due(wall_ms))
        )

    def checkpoint(self, db: sqlite3.Connection, wall_ms: int) -> Mapping[str, Sequence[bytes]]:
        """Inside a buffer transaction: save the ledger, publish what closed or was revised."""
        self._next_checkpoint = time.monotonic() + self.settings.checkpoint_s
        due = self.ledger.due(wall_ms) if self.timestamps_trusted else []
        self.ledger.flush(db)
        results: list[bytes] = []
        for period, start in due:
            results += (canonical(r) for r in self.publisher.records(db, period, start, wall_ms))
        for period, start in due:
            if period == "day":  # the day's final total, before the next day's first check
                self._budgets(db, start)
        if self.timestamps_trusted:
            self._budgets(db, wall_ms)
        if due or not self.completeness:
            self.completeness = self._today(db, wall_ms)
        # Alarms raised by the budget check are saved with the state that raised them.
        self.ledger.save_state(db, self.alarms.state())
        alarms, self.alarm_records = self.alarm_records, []
        return {INTERVALS: results, ALARMS: alarms}

    def _budgets(self, db: sqlite3.Connection, wall_ms: int) -> None:
        """Each budgeted meter's total for the local day holding wall_ms."""
        budgets = {b.device for b in self.settings.budgets}
        if not budgets:
            return
        day = self.grid.period_start(wall_ms, "day")
        rows = self.ledger.rows(db, day, self.grid.period_end(day, "day"))
        label = self.grid.label(day)[:10]
        events: list[AlarmEvent] = []
        for channel in self.ledger.channels:
            meter = channel.meter
            row = rows.get(meter.key)
            if meter.device in budgets and meter.daily_budget_kwh is not None:
                kwh = kwh_of(meter, amount(meter, row.ticks if row else 0)) or Decimal(0)
                events += self.alarms.energy(meter.device, label, kwh, wall_ms)
        self._publish_alarms(events)

    def _today(self, db: sqlite3.Connection, wall_ms: int) -> dict[str, object]:
        """Readings received / expected per device so far today: for `cgw status`."""
        day = self.grid.period_start(wall_ms, "day")
        end = self.grid.period_end(day, "day")
        rows = self.ledger.rows(db, day, end)
        totals = []
        for channel in self.ledger.channels:
            expected = expected_readings(channel.meter, channel.first_ms, day, end, wall_ms)
            total, _ = meter_total(
                channel.meter, rows.get(channel.meter.key), self.publisher.factors, expected
            )
            totals.append(total)
        kwh: dict[str, Decimal] = {}
        for total in totals:
            if total.kwh is not None:
                kwh[total.meter.device] = kwh.get(total.meter.device, Decimal(0)) + total.kwh
        return {
            "day": self.grid.label(day)[:10],
            **completeness(totals),
            "kwh": {device: float(v.quantize(KWH)) for device, v in sorted(kwh.items())},
            "to_ms": self.ledger.closed_until,
        }

    def status(self) -> dict[str, object]:
        return {
            "clock_synced": self.clock.synced,
            "held_readings": len(self.held) if self.held else 0,
            "closed_until_ms": self.ledger.closed_until,
            "active_alarms": [e.record() for e in self.alarms.active()],
            "today": self.completeness,
        }
