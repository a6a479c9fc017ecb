"""One thread per pulse input: counts its edges and hands the daemon a record every interval.

Each record carries the input's total pulse count (`PulseReading.total`); the daemon saves that
total in the buffer's `state` in the transaction that commits the record, and seeds the counter
from it on start. A restart therefore resumes from the last committed total: never counting a
pulse twice, and losing only what was counted in RAM after the last commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.pulse.counter import FLAG_RATE_LIMITED, PulseCounter, pulses_to_units
from drivers.pulse.gpio import GpiodPulseSource
from drivers.pulse.source import EmulatedPulseSource, PulseSource, PulseSourceError
from drivers.snapshot import NO_CONNECTION, OK, Snapshot
from gateway.config import PulseInput

log = logging.getLogger("cgw.pulses")

WAIT_SLICE_S = 0.5  # longest block in the source, so a stop request is seen promptly


def state_key(input_id: str) -> str:
    """Where the buffer's `state` table keeps an input's committed total."""
    return f"pulses.{input_id}"


@dataclass(slots=True)
class PulseReading(Snapshot):
    total: int | None = None  # pulses counted up to this record (None when the source failed)


@dataclass
class PulseHealth:
    polls: int = 0  # records produced
    failures: int = 0
    consecutive_failures: int = 0
    last_quality: str | None = None
    last_error: str | None = None
    last_ok_ms: int | None = None
    total_pulses: int = 0
    rejected_bounce: int = 0
    rejected_rate: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def open_source(pulse_input: PulseInput) -> PulseSource:
    if pulse_input.source == "emulated":
        return EmulatedPulseSource(pulse_input.emulated_rate_hz)
    return GpiodPulseSource(
        pulse_input.chip,
        pulse_input.line,
        debounce_s=pulse_input.debounce_s,
        edge=pulse_input.edge,
        bias=pulse_input.bias,
    )


class PulsePoller:
    def __init__(
        self,
        pulse_input: PulseInput,
        sink: queue.SimpleQueue[Snapshot],
        total: int,
        opener: Callable[[PulseInput], PulseSource] = open_source,
    ) -> None:
        self.input = pulse_input
        self.sink = sink
        self.counter = PulseCounter(pulse_input.debounce_s, pulse_input.max_rate_hz, total)
        self.health = PulseHealth(total_pulses=total)
        self.heartbeat = time.monotonic()  # the loop's last round (for the watchdog)
        self._opener = opener
        self._error: str | None = None
        self._emitted_total: int | None = None
        self._emitted_rejected_rate = 0
        self._limited = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"pulse-{pulse_input.id}", daemon=True
        )

    def start(self) -> None:
        self.heartbeat = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        interval = self.input.interval_s
        source = self._open()
        due = time.monotonic() + interval
        while not self._stop.is_set():
            wait = max(0.0, min(WAIT_SLICE_S, due - time.monotonic()))
            if source is None:
                self._stop.wait(wait)
            else:
                source = self._count(source, wait)
            now = self.heartbeat = time.monotonic()
            if now >= due:
                if source is None:
                    source = self._open()
                self._emit(connected=source is not None)
                due = max(due + interval, now)
        if source is not None:
            # Stopping: what was counted since the last record goes into a final one.
            source = self._count(source, 0.0)
            if source is not None:
                source.close()
                if self.counter.total != self._emitted_total:
                    self._emit(connected=True)

    def _open(self) -> PulseSource | None:
        try:
            source = self._opener(self.input)
        except PulseSourceError as exc:
            self._fail(str(exc))
            return None
        if self._error is not None:
            log.info("pulse input %s counts again", self.input.id, extra={"device": self.input.id})
        self._error = None
        return source

    def _count(self, source: PulseSource, wait_s: float) -> PulseSource | None:
        try:
            self.counter.feed(source.wait(wait_s))
        except PulseSourceError as exc:
            source.close()
            self._fail(str(exc))
            return None
        return source

    def _fail(self, error: str) -> None:
        if error != self._error:
            log.warning("pulse input %s: %s", self.input.id, error, extra={"device": self.input.id})
        self._error = error

    def _emit(self, connected: bool) -> None:
        ts_ms = time.time_ns() // 1_000_000
        health, counter = self.health, self.counter
        health.polls += 1
        if connected:
            quantity = self.input.quantity
            limited = counter.rejected_rate > self._emitted_rejected_rate
            if limited and not self._limited:
                log.warning(
                    "pulse input %s: pulses faster than max_rate_hz = %g rejected "
                    "(interference or a chattering contact? see docs/FIELD.md)",
                    self.input.id,
                    self.input.max_rate_hz,
                    extra={"device": self.input.id},
                )
            self._limited = limited
            reading = PulseReading(
                device=self.input.id,
                ts_ms=ts_ms,
                quality=OK,
                values={quantity: pulses_to_units(counter.total, self.input.pulses_per_unit)},
                flags={quantity: FLAG_RATE_LIMITED} if limited else {},
                total=counter.total,
            )
            self._emitted_total = counter.total
            self._emitted_rejected_rate = counter.rejected_rate
            health.consecutive_failures = 0
            health.last_ok_ms = ts_ms
            health.last_error = None
        else:
            reading = PulseReading(
                device=self.input.id, ts_ms=ts_ms, quality=NO_CONNECTION, error=self._error
            )
            health.failures += 1
            health.consecutive_failures += 1
            health.last_error = self._error
        health.last_quality = reading.quality
        health.total_pulses = counter.total
        health.rejected_bounce = counter.rejected_bounce
        health.rejected_rate = counter.rejected_rate
        self.sink.put(reading)
