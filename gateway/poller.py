"""One thread per bus: polls its devices on their own cadence, one transaction at a time."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.modbus import ModbusBus
from drivers.snapshot import OK, OUT_OF_RANGE, Snapshot
from gateway.config import Bus, Device

log = logging.getLogger("cgw.poller")


@dataclass
class DeviceHealth:
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_quality: str | None = None
    last_error: str | None = None
    last_ok_ms: int | None = None
    last_latency_ms: float | None = None
    late_polls: int = 0  # polls that started more than one interval late: the bus cannot keep up

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class BusPoller:
    """Reads each device of one bus when it is due and hands the snapshots to `sink`."""

    def __init__(
        self,
        bus: Bus,
        devices: list[Device],
        sink: queue.SimpleQueue[Snapshot],
        reader: Callable[[Bus], ModbusBus] = ModbusBus,
    ) -> None:
        self.bus = bus
        self.devices = devices
        self.sink = sink
        self.health = {d.id: DeviceHealth() for d in devices}
        self.heartbeat = time.monotonic()  # last time the loop made progress (for the watchdog)
        self._reader = reader(bus)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bus-{bus.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to stop after the current transaction."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if not self._thread.is_alive():  # else it is still inside a read; the process exit ends it
            self._reader.close()

    def _run(self) -> None:
        due = {d.id: time.monotonic() for d in self.devices}
        while not self._stop.is_set():
            device = min(self.devices, key=lambda d: due[d.id])
            wait = due[device.id] - time.monotonic()
            if wait > 0:
                self.heartbeat = time.monotonic()
                if self._stop.wait(wait):
                    break
            started = time.monotonic()
            snapshot = self._reader.read(device)
            self._record(device, snapshot, (time.monotonic() - started) * 1000)
            self.sink.put(snapshot)
            self.heartbeat = time.monotonic()
            due[device.id] += device.interval_s
            if due[device.id] < self.heartbeat:
                # Fell a whole interval behind: skip the missed slots rather than burst to catch up.
                self.health[device.id].late_polls += 1
                due[device.id] = self.heartbeat

    def _record(self, device: Device, snapshot: Snapshot, latency_ms: float) -> None:
        health = self.health[device.id]
        health.polls += 1
        health.last_quality = snapshot.quality
        health.last_latency_ms = round(latency_ms, 1)
        if snapshot.quality in (OK, OUT_OF_RANGE):
            if health.consecutive_failures:
                log.info(
                    "device %s answers again after %d failed polls",
                    device.id,
                    health.consecutive_failures,
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
            )
