"""The ledger: per accounted meter and interval, the energy its counter measured.

Readings go in by their own timestamps (not arrival time); each pair of readings is a segment of
energy that the grid apportions to the intervals it spans, so data arriving late after an outage
lands where it belongs. Cells (one meter, one interval) live in the `ledger` table of the buffer's
database, and the trackers' baselines in `state`: both are written at each checkpoint, in one
transaction, so a crash rewinds the ledger to a consistent moment. A counter loses nothing by it:
the next reading after a restart spans the lost seconds and carries their energy.

An interval closes `grace_s` after its end. Closing and any later change to a closed interval
(late data, an apportioned gap) produce result records, see `gateway.accounting.results`; a
record whose content changed since it was last published goes out again with the next revision.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from drivers.snapshot import Snapshot
from gateway.accounting.energy import (
    TICKS_PER_UNIT,
    CounterTrack,
    PowerIntegrator,
    Segment,
    to_ticks,
)
from gateway.accounting.grid import Grid
from gateway.accounting.settings import AccountingConfig, MeterConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    meter TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    ticks INTEGER NOT NULL,
    held_out INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    flags TEXT NOT NULL,  -- comma-separated
    PRIMARY KEY (meter, start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS published (
    key TEXT PRIMARY KEY,
    start_ms INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    digest TEXT NOT NULL
) WITHOUT ROWID;
"""
STATE_KEY = "accounting"
FLAG_CLOCK_UNSYNCED = "clock_unsynced"
PERIODS = ("interval", "hour", "day", "month")
MS_PER_HOUR = 3_600_000


@dataclass
class Cell:
    """One meter in one interval."""

    ticks: int = 0
    held_out: int = 0
    readings: int = 0
    flags: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Row:
    """A meter's totals over a period, read back from the ledger table."""

    meter: str
    ticks: int
    held_out: int
    readings: int
    flags: frozenset[str]


def ticks_per_unit(meter: MeterConfig) -> Fraction:
    """A counter's ticks per unit of its quantity: pulses for a pulse input, else 1e-6 units."""
    if meter.pulses_per_unit is not None:
        return Fraction(repr(meter.pulses_per_unit))
    return Fraction(TICKS_PER_UNIT)


def _gap_ms(limit_s: float, meter: MeterConfig) -> int:
    """A gap is longer than the limit and than three of the meter's own poll intervals."""
    return int(max(limit_s, 3 * meter.interval_s) * 1000)


def _tracker(
    meter: MeterConfig, config: AccountingConfig, state: Mapping[str, object] | None
) -> CounterTrack | PowerIntegrator:
    if meter.source == "power":
        return PowerIntegrator(gap_limit_ms=_gap_ms(config.power_gap_limit_s, meter), state=state)
    scale = ticks_per_unit(meter)
    modulus = None if meter.rollover is None else int(Fraction(meter.rollover) * scale)
    rate = (
        None if meter.max_per_hour is None else Fraction(meter.max_per_hour) * scale / MS_PER_HOUR
    )
    return CounterTrack(
        modulus=modulus,
        max_ticks_per_ms=rate,
        gap_ms=_gap_ms(config.gap_s, meter),
        # A register counter may step by its last digit, 0.01 of its unit, between quick polls.
        resolution=1 if meter.pulses_per_unit is not None else TICKS_PER_UNIT // 100,
        state=state,
    )


class Channel:
    """One accounted meter: its tracker, and the first time it was read."""

    def __init__(
        self, meter: MeterConfig, config: AccountingConfig, state: Mapping[str, object] | None
    ) -> None:
        self.meter = meter
        self.key = meter.key
        self.quantity = meter.quantity
        self.pulses = meter.pulses_per_unit is not None
        saved = state or {}
        tracker_state = saved.get("tracker")
        self.tracker = _tracker(
            meter, config, tracker_state if isinstance(tracker_state, Mapping) else None
        )
        first = saved.get("first_ms")
        self.first_ms: int | None = first if isinstance(first, int) else None

    def state(self) -> dict[str, object]:
        return {"tracker": self.tracker.state(), "first_ms": self.first_ms}

    def feed(self, snapshot: Snapshot) -> list[Segment] | None:
        """The segments a snapshot closes; None when it has no usable reading for this meter
        (not read, flagged invalid or out of range by the driver, or a negative counter)."""
        if self.pulses:
            total = getattr(snapshot, "total", None)
            if not isinstance(total, int):
                return None
            segments = self.tracker.feed(snapshot.ts_ms, total)
        else:
            value = snapshot.values.get(self.quantity)
            if value is None or self.quantity in snapshot.flags:
                return None
            if isinstance(self.tracker, PowerIntegrator):
                segments = self.tracker.feed(snapshot.ts_ms, value)
            elif value < 0:
                return None  # garbage no counter can show
            else:
                segments = self.tracker.feed(snapshot.ts_ms, to_ticks(value))
        if self.first_ms is None:
            self.first_ms = snapshot.ts_ms
        return segments


def _flags(text: str) -> set[str]:
    """Flags as the ledger table keeps them: comma-separated (a group_concat of such, too)."""
    return set(text.split(",")) - {""}


class Ledger:
    def __init__(self, config: AccountingConfig, timezone: str, db: sqlite3.Connection) -> None:
        self.config = config
        self.grid = Grid(timezone, config.interval_min)
        self.db = db
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM state WHERE key = ?", (STATE_KEY,)).fetchone()
        saved: dict[str, object] = json.loads(row[0]) if row else {}
        channels = saved.get("channels")
        channel_states = channels if isinstance(channels, Mapping) else {}
        self.channels = [Channel(m, config, channel_states.get(m.key)) for m in config.meters]
        self.by_device: dict[str, list[Channel]] = {}
        for channel in self.channels:
            self.by_device.setdefault(channel.meter.device, []).append(channel)
        closed = saved.get("closed_until")
        self.closed_until: int | None = closed if isinstance(closed, int) else None
        alarms = saved.get("alarms")
        self.saved_alarms: Mapping[str, object] | None = (
            alarms if isinstance(alarms, Mapping) else None
        )
        self.cells: dict[tuple[str, int], Cell] = {}
        self.dirty: set[tuple[str, int]] = set()
        self.late: set[int] = set()  # closed intervals that changed: their results are revised
        self.events: list[tuple[MeterConfig, Segment]] = []  # resets, rollovers, spikes, gaps
        # The interval the last reading of each meter fell in: most readings add to it directly.
        self._current: dict[str, tuple[int, int, Cell]] = {}
        self._pruned_to = 0

    # -- readings in ------------------------------------------------------------------

    def feed(self, snapshots: Iterable[Snapshot]) -> None:
        by_device = self.by_device
        for snapshot in snapshots:
            channels = by_device.get(snapshot.device)
            if not channels:
                continue
            for channel in channels:
                segments = channel.feed(snapshot)
                if segments is None:
                    continue
                cell = self._cell_at(channel.key, snapshot.ts_ms)
                cell.readings += 1
                if snapshot.clock_unsynced:
                    cell.flags.add(FLAG_CLOCK_UNSYNCED)
                for segment in segments:
                    self._add(channel, segment)

    def count_held(self, device: str, times: Iterable[int]) -> None:
        """Readings taken before the clock was right, at their corrected times: received."""
        for channel in self.by_device.get(device, ()):
            for ts_ms in times:
                cell = self._cell_at(channel.meter.key, ts_ms)
                cell.readings += 1
                cell.flags.add(FLAG_CLOCK_UNSYNCED)

    def close_due(self, now_ms: int) -> bool:
        """Whether an interval has closed since the last `due`."""
        if self.closed_until is None:
            return any(c.first_ms is not None for c in self.channels)
        return self.grid.end(self.closed_until) + int(self.config.grace_s * 1000) <= now_ms

    def _cell_at(self, meter: str, ts_ms: int) -> Cell:
        current = self._current.get(meter)
        if current is not None and current[0] <= ts_ms < current[1]:
            return current[2]
        start = self.grid.start(ts_ms)
        cell = self._cell(meter, start)
        self._current[meter] = (start, self.grid.end(start), cell)
        return cell

    def _cell(self, meter: str, start: int) -> Cell:
        key = (meter, start)
        cell = self.cells.get(key)
        if cell is None:
            row = self.db.execute(
                "SELECT ticks, held_out, readings, flags FROM ledger WHERE meter = ? AND start_ms = ?",
                key,
            ).fetchone()
            cell = Cell(row[0], row[1], row[2], _flags(row[3])) if row else Cell()
            self.cells[key] = cell
        self.dirty.add(key)
        if self.closed_until is not None and start < self.closed_until:
            self.late.add(start)
        return cell

    def _add(self, channel: Channel, segment: Segment) -> None:
        if segment.flags:
            self.events.append((channel.meter, segment))
        current = self._current.get(channel.key)
        if (
            current is not None
            and current[0] < segment.end_ms <= current[1]
            and segment.start_ms >= current[0]
            and not segment.flags
        ):
            current[2].ticks += segment.ticks
            return
        try:
            parts = self.grid.apportion(segment)
        except ValueError:  # years without a reading: no interval grid that long
            parts = [(self.grid.start(segment.end_ms - 1), segment.ticks, segment.held_out)]
        for start, ticks, held_out in parts:
            cell = self._cell(channel.key, start)
            cell.ticks += ticks
            cell.held_out += held_out
            cell.flags |= segment.flags

    # -- checkpoint --------------------------------------------------------------------

    def flush(self, db: sqlite3.Connection) -> None:
        """Write the changed cells, inside the caller's transaction (with `save_state`)."""
        db.executemany(
            "INSERT INTO ledger (meter, start_ms, ticks, held_out, readings, flags) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (meter, start_ms) DO UPDATE SET "
            "ticks = excluded.ticks, held_out = excluded.held_out, "
            "readings = excluded.readings, flags = excluded.flags",
            (
                (meter, start, c.ticks, c.held_out, c.readings, ",".join(sorted(c.flags)))
                for (meter, start), c in ((k, self.cells[k]) for k in sorted(self._changed()))
            ),
        )
        horizon = self._horizon()
        if horizon > self._pruned_to + 24 * MS_PER_HOUR:
            db.execute("DELETE FROM ledger WHERE start_ms < ?", (horizon,))
            db.execute("DELETE FROM published WHERE start_ms < ?", (horizon,))
            self._pruned_to = horizon
        self.dirty.clear()
        keep = {v[0] for v in self._current.values()}
        open_from = self.closed_until if self.closed_until is not None else 0
        self.cells = {k: c for k, c in self.cells.items() if k[1] >= open_from or k[1] in keep}

    def _changed(self) -> set[tuple[str, int]]:
        """Cells written since the last flush: the marked ones, and each meter's current cell
        (readings go straight to it without marking)."""
        return self.dirty | {(meter, current[0]) for meter, current in self._current.items()}

    def save_state(self, db: sqlite3.Connection, alarms_state: Mapping[str, object]) -> None:
        """The trackers, where closing has got to, and the alarms: with the cells they match."""
        state = {
            "closed_until": self.closed_until,
            "channels": {c.meter.key: c.state() for c in self.channels},
            "alarms": dict(alarms_state),
        }
        db.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (STATE_KEY, json.dumps(state, separators=(",", ":"))),
        )

    def _horizon(self) -> int:
        anchor = self.closed_until or 0
        return anchor - self.config.revision_days * 24 * MS_PER_HOUR - 31 * 24 * MS_PER_HOUR

    # -- closing -----------------------------------------------------------------------

    def due(self, now_ms: int) -> list[tuple[str, int]]:
        """Periods (period, start) to publish now: the intervals that closed, their hours, days
        and months when those closed too, and every closed period that late data changed."""
        grace = int(self.config.grace_s * 1000)
        first = min((c.first_ms for c in self.channels if c.first_ms is not None), default=None)
        if self.closed_until is None:
            if first is None:
                return []
            self.closed_until = self.grid.start(first)
        earliest = self.grid.start(now_ms - self.config.revision_days * 24 * MS_PER_HOUR)
        self.closed_until = max(self.closed_until, earliest)
        due: set[tuple[str, int]] = set()
        while self.grid.end(self.closed_until) + grace <= now_ms:
            start = self.closed_until
            end = self.grid.end(start)
            self.closed_until = end
            for period in PERIODS:
                period_start = self.grid.period_start(start, period)
                if self.grid.period_end(period_start, period) == end:
                    due.add((period, period_start))
        # Readings for a closed interval must go the slow way, which marks it late (revised);
        # what went into it the fast way is still to be written.
        for meter, current in list(self._current.items()):
            if current[0] < self.closed_until:
                self.dirty.add((meter, current[0]))
                del self._current[meter]
        for start in self.late:
            if start >= earliest:
                for period in PERIODS:
                    period_start = self.grid.period_start(start, period)
                    if self.grid.period_end(period_start, period) <= self.closed_until:
                        due.add((period, period_start))
        self.late.clear()
        return sorted(due, key=lambda p: (p[1], PERIODS.index(p[0])))

    def rows(self, db: sqlite3.Connection, start_ms: int, end_ms: int) -> dict[str, Row]:
        """Each meter's totals over [start_ms, end_ms), from the table (flush first)."""
        totals: dict[str, Row] = {}
        for meter, ticks, held_out, readings, flags in db.execute(
            "SELECT meter, sum(ticks), sum(held_out), sum(readings), group_concat(flags) "
            "FROM ledger WHERE start_ms >= ? AND start_ms < ? GROUP BY meter",
            (start_ms, end_ms),
        ):
            totals[meter] = Row(meter, ticks, held_out, readings, frozenset(_flags(flags)))
        return totals

    def interval_rows(
        self, db: sqlite3.Connection, start_ms: int, end_ms: int
    ) -> Iterator[tuple[int, dict[str, int]]]:
        """Per interval in [start_ms, end_ms): each meter's ticks (for per-interval balances)."""
        current: int | None = None
        ticks: dict[str, int] = {}
        for start, meter, value in db.execute(
            "SELECT start_ms, meter, ticks FROM ledger WHERE start_ms >= ? AND start_ms < ? "
            "ORDER BY start_ms",
            (start_ms, end_ms),
        ):
            if start != current:
                if current is not None:
                    yield current, ticks
                current, ticks = start, {}
            ticks[meter] = value
        if current is not None:
            yield current, ticks
