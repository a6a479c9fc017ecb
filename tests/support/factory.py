"""A reference factory: a month of emulated meter readings driven through `Accounting`.

The site (Asia/Shanghai, November 2026, every device polled on the minute):

- load-a 12 kW around the clock, load-b 6 kW 08:00-20:00, load-c 3 kW around the clock: sub-meters;
- pv 24 kW 09:00-15:00, counted on its export register;
- incomer: import = max(0, load - pv), export = max(0, pv - load), minute by minute;
- gas: a pulse input (100 pulses per m3 at line conditions), 10 m3/h 06:00-18:00;
- line: a production counter on a pulse input, 50 units an hour 08:00-20:00.

Every minute's energy is a whole number of Wh, so every register value is exact to the Wh.
Pulses are whole: the meter has emitted floor(minutes on x rate / 60) since the month began.

Events:

- clock jump: the gateway boots at 2026-11-01 00:00 with its wall clock two days behind and not
  synchronised; at 00:30, before that minute's poll, NTP steps it forward and the kernel says
  synchronised. The 30 readings taken before are stamped with the wrong wall clock.
- outage: the gateway stops cleanly after the 2026-11-10 09:59 poll cycle (a last checkpoint) and
  starts again at 13:00 (a new `Accounting` and `Buffer` on the same database). The registers of the
  Modbus meters kept counting; the pulse inputs did not: nobody watched the lines (docs/FIELD.md),
  so the pulses of 09:59-13:00 are never seen. After the restart the daemon's first checkpoint
  runs before the first poll cycle comes in.
- LAN outage: on 2026-11-25 from 14:00 to 15:00 the Modbus meters do not answer (the gateway runs
  on, every poll of them fails with `no_connection`); the pulse inputs are on the gateway's own
  GPIO lines and go on counting. The intervals close as gaps meanwhile and are revised once the
  meters answer again, their registers having kept counting.
- meter replacement: load-c's meter is swapped on 2026-11-20; the old meter's last reading is at
  11:59, the new one reads 0.000 at 12:00 and 0.050 at 12:01. The minute 11:59-12:00 is lost.

Checkpoints every 15 simulated minutes, at hh:02, hh:17, hh:32 and hh:47 (so each interval closes
as soon as its 2-minute grace is over), with the simulated wall clock, and a last one at
2026-12-01 00:02 so the month closes.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from buffer.store import Buffer
from drivers.pulse.counter import pulses_to_units
from drivers.snapshot import NO_CONNECTION, OK, Snapshot
from gateway.accounting.service import Accounting
from gateway.clock import ClockWatch
from gateway.config import Config, parse
from gateway.pulse_poller import PulseReading

Record = dict[str, Any]  # a published record, parsed
ZONE = ZoneInfo("Asia/Shanghai")
MINUTE_MS = 60_000
DAY_MIN = 1440
DAYS = 30


def local_ms(day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch ms of 2026-11-<day> hour:minute in Shanghai (day 31 is 2026-12-01)."""
    base = datetime(2026, 11, 1, tzinfo=ZONE) + timedelta(days=day - 1, hours=hour, minutes=minute)
    return int(base.timestamp() * 1000)


MONTH_START_MS = local_ms(1)
MONTH_END_MS = local_ms(31)


def minute_of(day: int, hour: int, minute: int = 0) -> int:
    """Minutes from 2026-11-01 00:00 to 2026-11-<day> hour:minute."""
    return (day - 1) * DAY_MIN + hour * 60 + minute


CLOCK_BEHIND_MS = 2 * 86_400_000
CLOCK_STEP_MINUTE = 30  # NTP steps the clock at 00:30 on the 1st, before that poll
OUTAGE_FROM = minute_of(10, 10)  # no poll cycle at 10:00 ... 12:59
OUTAGE_UNTIL = minute_of(10, 13)
LAN_FROM = minute_of(25, 14)  # the Modbus meters do not answer at 14:00 ... 14:59
LAN_UNTIL = minute_of(25, 15)
MODBUS = ("incomer", "pv", "load-a", "load-b", "load-c")
SWAP_MINUTE = minute_of(20, 12)  # the new load-c meter, from 0.000, is read at 12:00
LAST_MINUTE = minute_of(31, 0, 2)  # the last poll cycle and checkpoint: 2026-12-01 00:02

# Register values when the gateway first reads them (Wh, or pulses).
START_WH = {
    "import": 987_654_321,
    "export": 12_345_678,
    "pv": 54_321_000,
    "a": 100_000_000,
    "b": 20_000_500,
    "c": 7_777_777,
}
START_GAS_PULSES = 5_000_000
START_UNITS = 123_456

GAS_PULSES_PER_M3 = 100
GAS_PULSES_PER_HOUR = 10 * GAS_PULSES_PER_M3  # 10 m3/h
UNITS_PER_HOUR = 50

CONFIG = """
[gateway]
id = "gw-ref"
site = "reference-factory"
timezone = "Asia/Shanghai"
data_dir = "data"
runtime_dir = "run"
clock = "ntp"

[mqtt]
enabled = false

[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
port = 502

[[devices]]
id = "incomer"
bus = "lan"
unit = 1
profile = "eastron_sdm630"
interval_s = 60

[[devices]]
id = "pv"
bus = "lan"
unit = 2
profile = "eastron_sdm630"
interval_s = 60

[[devices]]
id = "load-a"
bus = "lan"
unit = 3
profile = "eastron_sdm630"
interval_s = 60

[[devices]]
id = "load-b"
bus = "lan"
unit = 4
profile = "eastron_sdm630"
interval_s = 60

[[devices]]
id = "load-c"
bus = "lan"
unit = 5
profile = "eastron_sdm630"
interval_s = 60

[[pulse_inputs]]
id = "gas"
source = "emulated"
quantity = "gas_volume_m3"
pulses_per_unit = 100
interval_s = 60

[[pulse_inputs]]
id = "line"
source = "emulated"
quantity = "production_count"
pulses_per_unit = 1
interval_s = 60

[accounting]
interval_min = 15
grace_s = 120

[[accounting.meters]]
device = "incomer"
role = "grid_import"

[[accounting.meters]]
device = "incomer"
role = "grid_export"

[[accounting.meters]]
device = "pv"
role = "pv"

[[accounting.meters]]
device = "load-a"
role = "load"

[[accounting.meters]]
device = "load-b"
role = "load"

[[accounting.meters]]
device = "load-c"
role = "load"

[[accounting.meters]]
device = "gas"
role = "supply"
carrier = "natural_gas"
conversion = 0.95

[[accounting.meters]]
device = "line"
role = "production"
"""


def load_config(folder: Path) -> Config:
    return parse(tomllib.loads(CONFIG), folder / "gateway.toml")


def power_wh_per_minute(minute: int) -> dict[str, int]:
    """Each load's and the PV's energy in the minute starting at `minute` (Wh)."""
    hour = (minute % DAY_MIN) // 60
    a = 200  # 12 kW
    b = 100 if 8 <= hour < 20 else 0  # 6 kW
    c = 50  # 3 kW
    pv = 400 if 9 <= hour < 15 else 0  # 24 kW
    load = a + b + c
    return {
        "a": a,
        "b": b,
        "c": c,
        "pv": pv,
        "import": max(0, load - pv),
        "export": max(0, pv - load),
    }


def gas_on(minute: int) -> bool:
    return 6 <= (minute % DAY_MIN) // 60 < 18


def line_on(minute: int) -> bool:
    return 8 <= (minute % DAY_MIN) // 60 < 20


@dataclass
class SimClock:
    """The gateway's clocks as the simulation sets them: true time, its wall clock, monotonic."""

    true_ms: int = MONTH_START_MS
    behind_ms: int = CLOCK_BEHIND_MS
    synced: bool = False

    def wall_ms(self) -> int:
        return self.true_ms - self.behind_ms

    def wall_ns(self) -> int:
        return self.wall_ms() * 1_000_000

    def mono_ns(self) -> int:
        return (self.true_ms - MONTH_START_MS + 5_000) * 1_000_000  # booted 5 s before 00:00

    def watch(self) -> ClockWatch:
        return ClockWatch(
            synced=lambda: self.synced,
            wall_ns=self.wall_ns,
            mono_ns=self.mono_ns,
            assume_synced=False,
        )


@dataclass
class Run:
    """What the month produced: every record committed to the buffer, in commit order."""

    intervals: list[Record] = field(default_factory=list)
    alarms: list[Record] = field(default_factory=list)
    snapshots: int = 0
    checkpoints: int = 0

    def latest(self) -> dict[tuple[object, ...], Record]:
        """The latest revision of each record, by (kind, device, quantity, period, start_ms)."""
        out: dict[tuple[object, ...], Record] = {}
        for record in self.intervals:
            key = record_key(record)
            if key not in out or record["revision"] >= out[key]["revision"]:
                out[key] = record
        return out


def record_key(record: Record) -> tuple[object, ...]:
    return (
        record["kind"],
        record.get("device"),
        record.get("quantity"),
        record["period"],
        record["start_ms"],
    )


class Factory:
    """The registers and pulse totals of the site's meters, minute by minute."""

    def __init__(self) -> None:
        self.wh = dict(START_WH)
        self.c_at_swap = 0  # load-c's total when the new meter was fitted (Wh)
        self.gas_on_minutes = 0
        self.line_on_minutes = 0
        self.gas_lost = 0  # pulses the gateway never saw (while it was down)
        self.line_lost = 0

    def gas_pulses(self) -> int:
        """Pulses the gas meter has emitted since the month began."""
        return self.gas_on_minutes * GAS_PULSES_PER_HOUR // 60

    def line_pulses(self) -> int:
        return self.line_on_minutes * UNITS_PER_HOUR // 60

    def lose_pulses(self, since: tuple[int, int]) -> None:
        """The gateway was down: the pulses since (gas, line) totals were never counted."""
        self.gas_lost += self.gas_pulses() - since[0]
        self.line_lost += self.line_pulses() - since[1]

    def snapshots(self, minute: int, ts_ms: int) -> list[Snapshot]:
        """What the poll cycle at `minute` reads, stamped `ts_ms` (the gateway's wall clock)."""
        wh = self.wh
        c = self.c_register(minute)
        gas = START_GAS_PULSES + self.gas_pulses() - self.gas_lost
        units = START_UNITS + self.line_pulses() - self.line_lost
        return [
            Snapshot(
                "incomer",
                ts_ms,
                OK,
                {
                    "active_energy_import_kwh": wh["import"] / 1000,
                    "active_energy_export_kwh": wh["export"] / 1000,
                },
            ),
            Snapshot("pv", ts_ms, OK, {"active_energy_export_kwh": wh["pv"] / 1000}),
            Snapshot("load-a", ts_ms, OK, {"active_energy_import_kwh": wh["a"] / 1000}),
            Snapshot("load-b", ts_ms, OK, {"active_energy_import_kwh": wh["b"] / 1000}),
            Snapshot("load-c", ts_ms, OK, {"active_energy_import_kwh": c / 1000}),
            PulseReading(
                "gas",
                ts_ms,
                OK,
                {"gas_volume_m3": pulses_to_units(gas, GAS_PULSES_PER_M3)},
                total=gas,
            ),
            PulseReading(
                "line", ts_ms, OK, {"production_count": pulses_to_units(units, 1)}, total=units
            ),
        ]

    def c_register(self, minute: int) -> int:
        """load-c's register in Wh: the old meter up to 11:59 on the 20th, then the new one."""
        if minute < SWAP_MINUTE:
            return self.wh["c"]
        return self.wh["c"] - self.c_at_swap

    def advance(self, minute: int) -> None:
        """The minute starting at `minute` passes: registers and pulse counts move on."""
        if minute == SWAP_MINUTE - 1:
            # The old meter's register stops at its 11:59 value; the new one starts at 0 at 12:00.
            self.c_at_swap = self.wh["c"] + power_wh_per_minute(minute)["c"]
        for name, wh in power_wh_per_minute(minute).items():
            self.wh[name] += wh
        self.gas_on_minutes += gas_on(minute)
        self.line_on_minutes += line_on(minute)


def run_month(folder: Path, progress: Callable[[int], None] | None = None) -> Run:
    config = load_config(folder)
    clock = SimClock()
    factory = Factory()
    run = Run()
    db_path = folder / "buffer.db"

    def start() -> tuple[Buffer, Accounting]:
        buffer = Buffer(db_path, gateway=config.gateway_id, site=config.site)
        return buffer, Accounting(config.accounting, config.timezone, buffer.db, clock.watch())

    def checkpoint(buffer: Buffer, accounting: Accounting) -> None:
        wall = clock.wall_ms()
        assert buffer.commit_with(lambda db: accounting.checkpoint(db, wall))
        run.checkpoints += 1

    buffer, accounting = start()
    seen_at_stop = (0, 0)
    for minute in range(LAST_MINUTE + 1):
        clock.true_ms = MONTH_START_MS + minute * MINUTE_MS
        if minute == CLOCK_STEP_MINUTE:
            clock.behind_ms = 0  # NTP steps the wall clock forward ...
            clock.synced = True  # ... and the kernel says synchronised
        if OUTAGE_FROM <= minute < OUTAGE_UNTIL:
            factory.advance(minute)
            continue
        if minute == OUTAGE_UNTIL:
            factory.lose_pulses(seen_at_stop)
            buffer, accounting = start()
            checkpoint(buffer, accounting)  # the first checkpoint comes before the first reading
        batch = factory.snapshots(minute, clock.wall_ms())
        if LAN_FROM <= minute < LAN_UNTIL:
            batch = [
                Snapshot(s.device, s.ts_ms, NO_CONNECTION, error="no answer")
                if s.device in MODBUS
                else s
                for s in batch
            ]
        accounting.observe(batch)
        run.snapshots += len(batch)
        if minute == OUTAGE_FROM - 1:
            checkpoint(buffer, accounting)  # a clean stop: the last checkpoint
            buffer.close()
            seen_at_stop = (factory.gas_pulses(), factory.line_pulses())
        elif minute % 15 == 2:
            checkpoint(buffer, accounting)
        factory.advance(minute)
        if progress is not None and minute % DAY_MIN == 0:
            progress(minute)
    for stream, record in buffer.db.execute("SELECT stream, record FROM pending ORDER BY id"):
        getattr(run, stream).append(json.loads(record))
    buffer.close()
    return run
