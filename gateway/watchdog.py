"""Supervision by systemd (sd_notify): READY=1 once the gateway is up, WATCHDOG=1 keep-alives only
while it makes progress, STATUS= lines for `systemctl status`, STOPPING=1 on the way out.

A keep-alive vouches for more than a running main loop: every bus and pulse thread has finished a
poll recently enough for its own schedule, and the buffer has taken the readings. A serial write
that never returns or a database another process keeps locked therefore ends in a watchdog restart
(`WatchdogSec=` in systemd/cgw.service), not in a gateway that looks alive and records nothing.
Without NOTIFY_SOCKET (not started by systemd) nothing is sent; stalls are still logged.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import systemd.daemon

from drivers.dlt645.identifiers import Dlt645Device
from drivers.plan import plan_profile
from gateway.config import AnyDevice, Bus, SerialBus

log = logging.getLogger("cgw.watchdog")

# A thread is stuck once it has made no progress for STALL_FACTOR times the longest its step can
# take when everything times out, and never sooner than STALL_FLOOR_S.
STALL_FLOOR_S = 5.0
STALL_FACTOR = 3.0
CHECK_EVERY_S = 1.0
STATUS_EVERY_S = 10.0


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the database's lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)


def longest_poll_s(bus: Bus, devices: Iterable[AnyDevice]) -> float:
    """The longest one device's poll may take on `bus`: connecting, then every request timing out."""
    silence = bus.silent_interval_s if isinstance(bus, SerialBus) else 0.0

    def requests(device: AnyDevice) -> int:
        if isinstance(device, Dlt645Device):
            return len(device.identifiers)
        return len(plan_profile(device.profile, device.quantities))

    return max(((requests(d) + 1) * (bus.timeout_s + silence) for d in devices), default=0.0)


class Beating(Protocol):
    # The monotonic time the thread last made progress or, while it sleeps on purpose, will wake.
    heartbeat: float


@dataclass
class _Watched:
    name: str
    thread: Beating
    limit_s: float


class Liveness:
    """Whether the gateway makes progress: its threads' heartbeats and the buffer's writes."""

    def __init__(self, now: float, floor_s: float = STALL_FLOOR_S) -> None:
        self.floor_s = floor_s
        self.buffer_error: str | None = None
        self._buffer_ok_at = now
        self._watched: list[_Watched] = []

    def watch(self, name: str, thread: Beating, longest_step_s: float = 0.0) -> None:
        """Watch a thread's heartbeat; `longest_step_s`: the longest one step of its loop may take
        when everything times out."""
        limit = max(self.floor_s, STALL_FACTOR * longest_step_s)
        self._watched.append(_Watched(name, thread, limit))

    def buffer_progressed(self, now: float) -> None:
        self._buffer_ok_at = now
        self.buffer_error = None

    def buffer_failed(self, error: str) -> None:
        self.buffer_error = error

    def problems(self, now: float) -> dict[str, str]:
        """What does not progress (name -> why); empty when the gateway is alive."""
        found = {}
        for watched in self._watched:
            idle = now - watched.thread.heartbeat
            if idle > watched.limit_s:
                found[watched.name] = f"stuck for {idle:.0f} s"
        if self.buffer_error is not None:
            found["buffer"] = self.buffer_error
        elif now - self._buffer_ok_at > self.floor_s:
            found["buffer"] = f"no work done for {now - self._buffer_ok_at:.0f} s"
        return found


def keepalive_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd gave this process (sd_watchdog_enabled), else None."""
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6 if int(usec) > 0 else None
    except ValueError:
        return None


class Notifier:
    """sd_notify(3); does nothing, at no cost, when systemd did not give a NOTIFY_SOCKET."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self.keepalive_s = keepalive_interval_s(environ) if self.enabled else None
        self._failing = False

    def send(self, *assignments: str) -> None:
        if not self.enabled:
            return
        try:
            systemd.daemon.notify("\n".join(assignments))
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd: %s", exc)
            self._failing = True
        else:
            self._failing = False


class Watchdog:
    """Drives the notify protocol from the main loop: `tick` once per step (cheap between checks)."""

    def __init__(self, liveness: Liveness, notifier: Notifier | None = None) -> None:
        self.liveness = liveness
        self.notifier = notifier or Notifier()
        self.ready = False
        self._next_check = self._next_keepalive = self._next_status = 0.0
        self._problems: dict[str, str] = {}
        if self.notifier.keepalive_s is not None:
            # A watchdog kill is SIGABRT: dump every thread's stack first, to show where it hung.
            faulthandler.enable(all_threads=True)

    def tick(self, now: float, up: Callable[[], bool], summary: Callable[[], str]) -> None:
        if not self.ready:
            if not up():
                return
            self.ready = True
            self.notifier.send("READY=1", f"STATUS={summary()}")
            self._next_status = now + STATUS_EVERY_S
        elif now < self._next_check:
            return
        keepalive_s = self.notifier.keepalive_s
        self._next_check = now + min(CHECK_EVERY_S, keepalive_s or CHECK_EVERY_S)
        problems = self.liveness.problems(now)
        self._log_changes(problems)
        if not problems and keepalive_s is not None and now >= self._next_keepalive:
            self._next_keepalive = now + keepalive_s
            self.notifier.send("WATCHDOG=1")
        if problems.keys() != self._problems.keys() or now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            stalled = "; ".join(f"{name}: {why}" for name, why in problems.items())
            self.notifier.send(f"STATUS={'stalled: ' + stalled if stalled else summary()}")
        self._problems = problems

    def _log_changes(self, problems: dict[str, str]) -> None:
        withheld = "; watchdog keep-alives withheld" if self.notifier.keepalive_s else ""
        for name, why in problems.items():
            if name not in self._problems:
                log.error("%s makes no progress: %s%s", name, why, withheld)
        for name in self._problems.keys() - problems.keys():
            log.info("%s makes progress again", name)

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping")
