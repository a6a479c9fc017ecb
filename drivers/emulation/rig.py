"""A rig file: a floor of emulated meters on serial lines, following a scripted scenario.

A hardware-in-the-loop rig is a PC with USB-RS485 adapters wired to the gateway's bus; `cgw
emulate --rig FILE` makes it answer as the meters of a distribution board would (Modbus RTU and
DL/T 645-2007 on the same lines), while the script changes the load, silences meters, slows
them, adds line noise and swaps a meter for a new one. The format is in docs/RIG.md; every
mistake is refused with the file and the key.

All times in the file are seconds of the rig's clock from its start, which runs `speed` times as
fast as the wall clock: with speed 60 the meters' counters advance an hour a minute, and an event
at 3600 comes after a minute.
"""

from __future__ import annotations

import bisect
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drivers.dlt645.emulation import FAULTS as DLT645_FAULTS
from drivers.dlt645.emulation import EmulatedDlt645Meter
from drivers.dlt645.frame import normalise_address
from drivers.emulation.load import LoadModel
from drivers.emulation.meter import FAULTS, EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile, shipped_profiles
from gateway.tomltable import ConfigError, Table, array

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
NO_FAULT = "none"


@dataclass(frozen=True)
class LineSpec:
    id: str
    serial: str | None
    pty: str | None
    baudrate: int
    parity: str
    stopbits: int
    baud_accurate: bool
    noise: float


@dataclass(frozen=True)
class LoadShape:
    """Factors of the meter's base load at points of the rig's clock, joined by straight lines;
    after the last point the profile holds its last factor, or starts over with `repeat`."""

    points: tuple[tuple[float, float], ...]
    repeat: bool = False

    def factor(self, t: float) -> float:
        times = [p[0] for p in self.points]
        if self.repeat and times[-1] > 0:
            t %= times[-1]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (t0, f0), (t1, f1) = self.points[i - 1], self.points[i]
        return f0 + (f1 - f0) * (t - t0) / (t1 - t0)


@dataclass(frozen=True)
class MeterSpec:
    id: str
    line: str
    unit: int | None  # a Modbus meter's unit id
    profile: str | None  # its shipped profile
    dlt645: str | None  # a DL/T 645 meter's address
    seed: int
    load: LoadShape | None
    slow_s: float

    @property
    def faults(self) -> tuple[str, ...]:
        return FAULTS if self.dlt645 is None else DLT645_FAULTS


@dataclass(frozen=True)
class Event:
    """One scripted change at `at_s`: a meter's fault (None clears it), a new meter in its place
    (`replace`, with the new meter's counters starting at `import_kwh`), or a line's noise."""

    at_s: float
    key: str  # where the event is in the file, for the log
    meter: str | None = None
    fault: str | None = None
    set_fault: bool = False
    replace: bool = False
    import_kwh: float = 0.0
    profile: str | None = None
    line: str | None = None
    noise: float | None = None

    def describe(self) -> str:
        if self.noise is not None:
            return f"line {self.line}: noise {self.noise:g} of answers"
        if self.replace:
            model = f" ({self.profile})" if self.profile else ""
            return f"meter {self.meter}: replaced by a new meter{model} at {self.import_kwh:g} kWh"
        return f"meter {self.meter}: {self.fault or 'answers normally'}"


@dataclass(frozen=True)
class RigSpec:
    path: str
    seed: int
    speed: float
    duration_s: float | None
    lines: tuple[LineSpec, ...]
    meters: tuple[MeterSpec, ...]
    events: tuple[Event, ...]


def load_rig(path: str | Path) -> RigSpec:
    """Read and check a rig file; ConfigError naming the file and the key otherwise."""
    name = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"not valid TOML: {exc}") from None
    root = Table(name, "", data)
    rig = root.table("rig")
    seed = rig.integer("seed", 0, -(2**63), 2**63 - 1)
    speed = rig.number("speed", 1.0, 0.001, 1e6)
    duration = rig.get("duration_s", float, None)
    if duration is not None and duration <= 0:
        raise rig.error("duration_s", f"must be above 0, not {duration:g}")
    rig.done()
    lines = tuple(_line(t) for t in array(root, "lines"))
    if not lines:
        raise root.error("lines", "is required: at least one [[lines]] with serial or pty")
    _unique(root, "lines", [line.id for line in lines])
    meters = tuple(_meter(t, {line.id for line in lines}, seed) for t in array(root, "meters"))
    if not meters:
        raise root.error("meters", "is required: at least one [[meters]]")
    _unique(root, "meters", [m.id for m in meters])
    for line in lines:
        on_line = [m for m in meters if m.line == line.id]
        for kind, keys in (
            ("unit", [str(m.unit) for m in on_line if m.unit is not None]),
            ("address", [m.dlt645 for m in on_line if m.dlt645 is not None]),
        ):
            twice = next((k for k in keys if keys.count(k) > 1), None)
            if twice is not None:
                raise root.error("meters", f"two meters with {kind} {twice} on line {line.id}")
    by_id = {m.id: m for m in meters}
    events = tuple(_event(t, by_id, {line.id for line in lines}) for t in array(root, "events"))
    root.done()
    return RigSpec(name, seed, speed, duration, lines, meters, tuple(sorted(events, key=_at)))


def _at(event: Event) -> float:
    return event.at_s


def _unique(root: Table, name: str, ids: list[str]) -> None:
    twice = next((i for i in ids if ids.count(i) > 1), None)
    if twice is not None:
        raise root.error(name, f"id {twice!r} given twice")


def _line(table: Table) -> LineSpec:
    serial = table.get("serial", str, None)
    pty = table.get("pty", str, None)
    if (serial is None) == (pty is None):
        raise table.error("serial", "give exactly one of serial (a device) or pty (a link to make)")
    baudrate = table.choice("baudrate", BAUDRATES, 9600)
    line = LineSpec(
        id=table.identifier("id"),
        serial=serial,
        pty=pty,
        baudrate=baudrate,
        parity=table.choice("parity", ("N", "E", "O"), "N"),
        stopbits=table.choice("stopbits", (1, 2), 1),
        # A real port paces itself; a pty's baud rate is fiction unless we pace it.
        baud_accurate=table.get("baud_accurate", bool, pty is not None),
        noise=table.number("noise", 0.0, 0.0, 1.0),
    )
    table.done()
    return line


def _meter(table: Table, lines: set[str], seed: int) -> MeterSpec:
    line = table.get("line", str)
    if line not in lines:
        raise table.error("line", f"no line {line!r} (lines: {', '.join(sorted(lines))})")
    address = table.get("dlt645", str, None)
    unit = table.get("unit", int, None)
    if (address is None) == (unit is None):
        raise table.error("unit", "give exactly one of unit (Modbus) or dlt645 (an address)")
    profile = None
    if address is not None:
        try:
            address = normalise_address(address)
        except ValueError:
            address = "A"
        if "A" in address:
            raise table.error("dlt645", "must be the meter's 12-digit decimal address")
    else:
        unit = table.integer("unit", None, 1, 247)
        profile = _profile(table, "profile", required=True)
    shape = _shape(table)
    meter = MeterSpec(
        id=table.identifier("id"),
        line=line,
        unit=unit,
        profile=profile,
        dlt645=address,
        # Meters sharing the rig's seed still differ, as with `cgw emulate --meter`.
        seed=table.integer("seed", seed + (unit or int(address or 0)), -(2**63), 2**63 - 1),
        load=shape,
        slow_s=table.number("slow_s", 2.0, 0.0, 60.0),
    )
    table.done()
    return meter


def _profile(table: Table, key: str, required: bool) -> str | None:
    profile = table.get(key, str) if required else table.get(key, str, None)
    if profile is not None and profile not in shipped_profiles():
        shipped = ", ".join(shipped_profiles())
        raise table.error(key, f"no profile {profile!r} (shipped: {shipped})")
    return None if profile is None else str(profile)


def _shape(table: Table) -> LoadShape | None:
    points = table.get("load", list, None)
    repeat = table.get("load_repeat", bool, False)
    if points is None:
        return None
    parsed: list[tuple[float, float]] = []
    for i, point in enumerate(points):
        if (
            not isinstance(point, list)
            or len(point) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
        ):
            raise table.error(f"load[{i}]", "must be [seconds, factor], e.g. [3600, 0.5]")
        at, factor = float(point[0]), float(point[1])
        if parsed and at <= parsed[-1][0]:
            raise table.error(f"load[{i}]", "times must increase")
        if not 0.01 <= factor <= 100:
            raise table.error(f"load[{i}]", f"factor {factor:g} must be between 0.01 and 100")
        parsed.append((at, factor))
    if not parsed:
        raise table.error("load", "needs at least one [seconds, factor] point")
    return LoadShape(tuple(parsed), repeat)


def _event(table: Table, meters: dict[str, MeterSpec], lines: set[str]) -> Event:
    at = table.number("at_s", 0.0, 0.0, 1e9)
    line = table.get("line", str, None)
    meter_id = table.get("meter", str, None)
    if (line is None) == (meter_id is None):
        raise table.error("meter", "name exactly one of meter or line")
    if line is not None:
        if line not in lines:
            raise table.error("line", f"no line {line!r}")
        event = Event(at, table.key, line=line, noise=table.number("noise", 0.0, 0.0, 1.0))
        table.done()
        return event
    meter = meters.get(meter_id)
    if meter is None:
        raise table.error("meter", f"no meter {meter_id!r}")
    replace = table.get("replace", bool, False)
    if replace:
        profile = _profile(table, "profile", required=False)
        if profile is not None and meter.dlt645 is not None:
            raise table.error("profile", "a DL/T 645 meter has no profile")
        event = Event(
            at,
            table.key,
            meter=meter.id,
            replace=True,
            import_kwh=table.number("import_kwh", 0.0, 0.0, 1e9),
            profile=profile,
        )
    else:
        fault = table.choice("fault", (*meter.faults, NO_FAULT))
        event = Event(
            at,
            table.key,
            meter=meter.id,
            fault=None if fault == NO_FAULT else fault,
            set_fault=True,
        )
    table.done()
    return event


class Rig:
    """The running floor: one EmulatorServer per line, events applied as the rig clock passes
    them. `clock()` is the rig's clock in seconds since its start."""

    def __init__(self, spec: RigSpec, wall: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self._wall = wall
        self._origin = wall()
        self.servers = {
            line.id: EmulatorServer(noise_seed=spec.seed + i) for i, line in enumerate(spec.lines)
        }
        for line in spec.lines:
            self.servers[line.id].noise = line.noise
        self._replacements: dict[str, int] = {}
        for meter in spec.meters:
            self._install(meter, meter.profile, meter.seed, import_kwh=None)
        self.applied: list[tuple[float, Event]] = []  # (rig time, event) as they happened

    def clock(self) -> float:
        return (self._wall() - self._origin) * self.spec.speed

    def meter_clock(self) -> float:
        """The meters' clock: wall time at the start, then running at the rig's speed."""
        return self._origin + self.clock()

    def _install(
        self, meter: MeterSpec, profile: str | None, seed: int, import_kwh: float | None
    ) -> None:
        load = LoadModel(seed=seed, clock=self.meter_clock, import_kwh=import_kwh)
        if meter.load is not None:
            shape, origin = meter.load, self._origin
            load.shape = lambda t: shape.factor(t - origin)
        server = self.servers[meter.line]
        if meter.dlt645 is not None:
            dlt = EmulatedDlt645Meter(meter.dlt645, load=load, slow_delay_s=meter.slow_s)
            server.dlt645_meters[meter.dlt645] = dlt  # one dict store: atomic for the line thread
        else:
            assert meter.unit is not None and profile is not None
            server.meters[meter.unit] = EmulatedMeter(
                meter.unit, load_shipped_profile(profile), load=load, slow_delay_s=meter.slow_s
            )

    def _emulated(self, meter: MeterSpec) -> EmulatedMeter | EmulatedDlt645Meter:
        server = self.servers[meter.line]
        if meter.dlt645 is not None:
            return server.dlt645_meters[meter.dlt645]
        assert meter.unit is not None
        return server.meters[meter.unit]

    def start(self) -> list[str]:
        """Open every line; returns what each serves on. OSError if a line cannot be opened."""
        places = []
        for line in self.spec.lines:
            server = self.servers[line.id]
            settings = (line.baudrate, line.parity, line.stopbits)
            paced = ", baud-accurate" if line.baud_accurate else ""
            if line.serial is not None:
                server.serve_serial(line.serial, *settings, baud_accurate=line.baud_accurate)
                places.append(f"line {line.id}: {line.serial} ({line.baudrate} baud{paced})")
            else:
                assert line.pty is not None
                slave = server.start_pty(line.pty, *settings, baud_accurate=line.baud_accurate)
                places.append(
                    f"line {line.id}: {line.pty} -> {slave} ({line.baudrate} baud{paced})"
                )
        return places

    def apply(self, event: Event) -> None:
        if event.noise is not None:
            assert event.line is not None
            self.servers[event.line].noise = event.noise
        else:
            meter = next(m for m in self.spec.meters if m.id == event.meter)
            if event.replace:
                count = self._replacements.get(meter.id, 0) + 1
                self._replacements[meter.id] = count
                profile = event.profile or meter.profile
                self._install(meter, profile, meter.seed + 1000 * count, event.import_kwh)
            else:
                self._emulated(meter).fault = event.fault
        self.applied.append((self.clock(), event))

    def run(self, stop: threading.Event, report: Callable[[str], None]) -> None:
        """Apply the script as the rig clock reaches each event, until stop is set or the rig's
        duration has passed (returns then)."""
        pending = list(self.spec.events)
        while not stop.is_set():
            now = self.clock()
            while pending and pending[0].at_s <= now:
                event = pending.pop(0)
                self.apply(event)
                report(f"t={event.at_s:g} s: {event.describe()}")
            if self.spec.duration_s is not None and now >= self.spec.duration_s:
                return
            if any(server.failures for server in self.servers.values()):
                return
            upcoming = [e.at_s for e in pending[:1]]
            if self.spec.duration_s is not None:
                upcoming.append(self.spec.duration_s)
            wait = min([(t - now) / self.spec.speed for t in upcoming] + [0.5])
            stop.wait(max(wait, 0.001))

    def failures(self) -> list[str]:
        return [f for server in self.servers.values() for f in server.failures]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
