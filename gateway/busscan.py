"""A scan of a configured bus while the gateway runs: in the bus thread between polls, so the
scan never collides with polling (used by the `scan` command and the commissioning page)."""

from __future__ import annotations

import io
import logging
import queue
import time
from collections.abc import Callable, Sequence

from gateway.config import Device, SerialBus, TcpBus
from gateway.poller import BusPoller
from gateway.tools.text import Progress

log = logging.getLogger("cgw.scan")

SCAN_TIMEOUT_S = 0.2  # per unit probed: a scan must not hold a bus for long

Result = dict[str, object]


class ScanBusy(Exception):
    pass


class BusScans:
    """Starts scans on the daemon's buses and hands each result, in the main thread, to its
    `done` callback (`finish()` runs them; call it from the main loop)."""

    def __init__(self, pollers: Sequence[BusPoller]) -> None:
        self.pollers = {p.bus.id: p for p in pollers}
        self._finished: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._scanning: set[str] = set()

    def start(self, bus_id: str, units: list[int], done: Callable[[Result], None]) -> None:
        """Raises KeyError for an unknown bus, ScanBusy while that bus is being scanned."""
        from gateway.tools.scan import Scanner, snippet  # only when a scan is asked for

        poller = self.pollers.get(bus_id)
        if poller is None:
            raise KeyError(f"no bus {bus_id!r} (buses: {', '.join(self.pollers) or 'none'})")
        if bus_id in self._scanning:
            raise ScanBusy(f"a scan of bus {bus_id} is under way")
        self._scanning.add(bus_id)
        bus = poller.bus
        known = {d.unit: d.id for d in poller.devices if isinstance(d, Device)}
        scanner = Scanner(
            [bus], units, SCAN_TIMEOUT_S, [], all_settings=False, progress=_Beat(poller)
        )
        started = time.monotonic()

        def job() -> None:  # in the bus thread, between polls
            try:
                found = scanner.run()
                result: Result = {
                    "bus": bus_id,
                    "units": [units[0], units[-1]],
                    "seconds": round(time.monotonic() - started, 1),
                    "found": [
                        {
                            "unit": f.unit,
                            "profile": f.profile,
                            "model": f.model,
                            "how": f.how,
                            "configured_as": None if f.unit is None else known.get(f.unit),
                        }
                        for f in found.found
                    ],
                    "notes": found.notes,
                    "snippet": snippet(
                        found,
                        bus if isinstance(bus, TcpBus) else None,
                        bus.port if isinstance(bus, SerialBus) else None,
                    ),
                }
            except Exception as exc:  # the port vanished, the line broke: said in the result
                result = {"bus": bus_id, "error": f"{type(exc).__name__}: {exc}"}
            self._finished.put(lambda: self._done(bus_id, done, result))

        baud = f" at {bus.baudrate} baud" if isinstance(bus, SerialBus) else ""
        log.info("scanning bus %s%s for units %d-%d", bus_id, baud, units[0], units[-1])
        poller.between_polls(job)

    def finish(self) -> None:
        while True:
            try:
                self._finished.get_nowait()()
            except queue.Empty:
                return

    def _done(self, bus_id: str, done: Callable[[Result], None], result: Result) -> None:
        self._scanning.discard(bus_id)
        done(result)


class _Beat(Progress):
    """The scanner's progress: beats the bus thread's heartbeat, so a long scan is no stall."""

    def __init__(self, poller: BusPoller) -> None:
        super().__init__(1, stream=io.StringIO())
        self.poller = poller

    def advance(self, label: str, steps: int = 1) -> None:
        self.poller.heartbeat = time.monotonic()
