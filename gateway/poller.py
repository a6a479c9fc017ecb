"""One thread per bus: polls its devices on their own cadence, one transaction at a time.

The schedule keeps each device's cadence without drift (the next poll is due one interval after the
last was due, not after it ended). A bus that cannot keep up is reported, not hidden: its `demand`
(the share of bus time its devices' polls need at their intervals) goes above 1 and late polls are counted.

A dead meter must not stall the bus. Each device's timeout adapts to its measured latency, so a
meter that answers in 30 ms is given up on long before the bus timeout; and after `backoff_after`
failed polls in a row the device is polled at doubling intervals up to `backoff_max_s`. A dead
device therefore costs the bus at most one bus timeout per backoff period once backed off
(docs/FIELD.md has the figures).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.dlt645.client import Dlt645Bus
from drivers.dlt645.identifiers import Dlt645Device
from drivers.modbus import ModbusBus
from drivers.snapshot import OK, OUT_OF_RANGE, Snapshot
from gateway.config import AnyDevice, Bus, Device, SerialBus

log = logging.getLogger("cgw.poller")

# Adaptive timeout: the mean latency plus this many deviations, never below the floor.
TIMEOUT_DEVIATIONS = 4.0
TIMEOUT_FLOOR_S = 0.05
LATENCY_WEIGHT = 0.2  # of the newest sample in the moving averages


@dataclass
class DeviceHealth:
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_quality: str | None = None
    last_error: str | None = None
    last_ok_ms: int | None = None
    last_latency_ms: float | None = None
    timeout_ms: float | None = None
    backed_off_s: float = 0.0  # > 0 while the device is polled less often because it fails
    late_polls: int = 0  # polls that started more than one interval late: the bus cannot keep up

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class _Schedule:
    device: AnyDevice
    due: float
    latency_s: float | None = None  # moving average of successful polls
    deviation_s: float = 0.0
    duration_s: float | None = None  # moving average of every poll's bus time
    period_s: float = 1.0  # the interval, or the backoff while backed off

    def took(self, seconds: float) -> None:
        if self.duration_s is None:
            self.duration_s = seconds
        else:
            self.duration_s += LATENCY_WEIGHT * (seconds - self.duration_s)

    def timeout(self, bus_timeout_s: float) -> float:
        if self.latency_s is None:
            return bus_timeout_s
        adaptive = self.latency_s + TIMEOUT_DEVIATIONS * self.deviation_s + TIMEOUT_FLOOR_S
        return min(bus_timeout_s, max(adaptive, 2 * self.latency_s))

    def learn(self, latency_s: float) -> None:
        if self.latency_s is None:
            self.latency_s = latency_s
            return
        error = latency_s - self.latency_s
        self.latency_s += LATENCY_WEIGHT * error
        self.deviation_s += LATENCY_WEIGHT * (abs(error) - self.deviation_s)


@dataclass
class BusHealth:
    demand: float = 0.0  # share of the bus time the polls need; above 1 it cannot keep up
    keeps_up: bool = True

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class LineReader:
    """Reads any device of one bus: Modbus through ModbusBus, DL/T 645 through Dlt645Bus. A
    serial line may carry both at the same settings; the bus thread never overlaps them."""

    def __init__(self, bus: Bus, devices: list[AnyDevice]) -> None:
        self.modbus = ModbusBus(bus) if any(isinstance(d, Device) for d in devices) else None
        self.dlt645 = (
            Dlt645Bus(bus)
            if isinstance(bus, SerialBus) and any(isinstance(d, Dlt645Device) for d in devices)
            else None
        )

    def read(self, device: AnyDevice, timeout_s: float) -> tuple[Snapshot, int]:
        """The snapshot and the number of request/reply transactions it took."""
        if isinstance(device, Dlt645Device):
            assert self.dlt645 is not None
            return self.dlt645.read(device), len(device.identifiers)
        assert self.modbus is not None
        snapshot = self.modbus.read(device, timeout_s)
        return snapshot, max(self.modbus.transactions, 1)

    def close(self) -> None:
        for reader in (self.modbus, self.dlt645):
            if reader is not None:
                reader.close()


class BusPoller:
    """Reads each device of one bus when it is due and hands the snapshots to `sink`."""

    def __init__(
        self,
        bus: Bus,
        devices: list[AnyDevice],
        sink: queue.SimpleQueue[Snapshot],
    ) -> None:
        self.bus = bus
        self.devices = devices
        self.sink = sink
        self.health = {d.id: DeviceHealth() for d in devices}
        self.bus_health = BusHealth()
        # For the watchdog: when the loop last made progress or, while it sleeps until a device
        # is due, when it will wake. A read that never returns leaves it behind.
        self.heartbeat = time.monotonic()
        self._reader = LineReader(bus, devices)
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set with a new job and on stop
        self._thread = threading.Thread(target=self._run, name=f"bus-{bus.id}", daemon=True)

    def start(self) -> None:
        self.heartbeat = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop after the current transaction."""
        self._stop.set()
        self._wake.set()

    def between_polls(self, job: Callable[[], None]) -> None:
        """Run `job` in the bus thread between two polls, with the line closed: a scan uses the
        line without colliding with polling. Polls due meanwhile wait; a long job should beat
        `heartbeat` itself."""
        self._jobs.put(job)
        self._wake.set()

    def _run_jobs(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            self._reader.close()  # the next poll opens the line again
            self.heartbeat = time.monotonic()
            try:
                job()
            except Exception:  # a job's own failure must not end polling
                log.exception("bus %s: a job between polls failed", self.bus.id)
            self.heartbeat = time.monotonic()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if not self._thread.is_alive():  # else it is still inside a read; the process exit ends it
            self._reader.close()

    def _run(self) -> None:
        start = time.monotonic()
        schedules = [_Schedule(d, start) for d in self.devices]
        while not self._stop.is_set():
            self._run_jobs()
            schedule = min(schedules, key=lambda s: s.due)
            wait = schedule.due - time.monotonic()
            if wait > 0:
                self.heartbeat = schedule.due
                self._wake.wait(wait)  # until due, or a job or stop arrives
                self._wake.clear()
                continue
            self._poll(schedule)
            self._account(schedules)

    def _poll(self, schedule: _Schedule) -> None:
        device = schedule.device
        health = self.health[device.id]
        timeout = schedule.timeout(self.bus.timeout_s)
        started = time.monotonic()
        snapshot, transactions = self._reader.read(device, timeout)
        ended = time.monotonic()
        self.sink.put(snapshot)
        self.heartbeat = ended
        answered = snapshot.quality in (OK, OUT_OF_RANGE)
        if answered:
            schedule.learn((ended - started) / transactions)
        schedule.took(ended - started)
        self._record(device, health, snapshot, (ended - started) * 1000, timeout * 1000)

        interval = device.interval_s
        if health.consecutive_failures >= self.bus.backoff_after:
            doublings = health.consecutive_failures - self.bus.backoff_after + 1
            backoff = min(interval * 2**doublings, max(self.bus.backoff_max_s, interval))
            health.backed_off_s = schedule.period_s = backoff
            schedule.due = ended + backoff
            return
        health.backed_off_s = 0.0
        schedule.period_s = interval
        schedule.due += interval
        if schedule.due < ended:
            # Fell a whole interval behind: skip the missed slots rather than burst to catch up.
            health.late_polls += 1
            schedule.due = ended

    def _account(self, schedules: list[_Schedule]) -> None:
        """The bus's demand: the share of bus time its devices' polls need at their intervals."""
        demand = sum(s.duration_s / s.period_s for s in schedules if s.duration_s is not None)
        self.bus_health.demand = round(demand, 3)
        if any(s.duration_s is None for s in schedules):
            return  # not every device has been polled yet
        keeps_up = demand < 1.0
        if keeps_up != self.bus_health.keeps_up:
            if keeps_up:
                log.info(
                    "bus %s keeps up with its poll intervals again",
                    self.bus.id,
                    extra={"bus": self.bus.id},
                )
            else:
                log.warning(
                    "bus %s cannot keep up: its devices need %.0f%% of the bus time; "
                    "lengthen poll intervals, read fewer quantities or split the bus",
                    self.bus.id,
                    demand * 100,
                    extra={"bus": self.bus.id},
                )
            self.bus_health.keeps_up = keeps_up

    def _record(
        self,
        device: AnyDevice,
        health: DeviceHealth,
        snapshot: Snapshot,
        latency_ms: float,
        timeout_ms: float,
    ) -> None:
        health.polls += 1
        health.last_quality = snapshot.quality
        health.last_latency_ms = round(latency_ms, 1)
        health.timeout_ms = round(timeout_ms, 1)
        if snapshot.quality in (OK, OUT_OF_RANGE):
            if health.consecutive_failures:
                log.info(
                    "device %s answers again after %d failed polls",
                    device.id,
                    health.consecutive_failures,
                    extra={"device": device.id, "bus": self.bus.id},
                )
            health.consecutive_failures = 0
            health.last_ok_ms = snapshot.ts_ms
            health.last_error = None
            return
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = snapshot.error
        if health.consecutive_failures == 1:
            log.warning(
                "device %s on bus %s: %s: %s",
                device.id,
                self.bus.id,
                snapshot.quality,
                snapshot.error,
                extra={"device": device.id, "bus": self.bus.id},
            )
        elif health.consecutive_failures == self.bus.backoff_after:
            log.warning(
                "device %s keeps failing: polling it less often (at most every %g s) until it answers",
                device.id,
                self.bus.backoff_max_s,
                extra={"device": device.id, "bus": self.bus.id},
            )
