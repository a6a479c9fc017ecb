"""Wall-clock trust on a board with no RTC: is the kernel clock synchronised, and did it jump?

After boot the wall clock is whatever fake-hwclock restored (or 1970) until NTP steps it.
CLOCK_MONOTONIC is never stepped (NTP only slews it, together with the wall clock), so the
offset wall - monotonic is constant except when the wall clock is stepped: a change in it is a
jump, and its size is exactly what must be added to timestamps taken under the old offset.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from drivers.snapshot import Snapshot

log = logging.getLogger("cgw.clock")

TIME_ERROR = 5
STA_UNSYNC = 0x0040
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_NS_PER_MS = 1_000_000


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> as exported by libc's `adjtimex` symbol: every kernel
    # "long" is a C long, so this is 208 bytes on 64-bit and 128 bytes on armhf. (Programs built
    # with _TIME_BITS=64 are redirected to __adjtimex64; looking up `adjtimex` by name gets the
    # layout below.)
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int32 * 11),
    ]


@functools.cache
def _adjtimex() -> Any:
    try:
        func = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.POINTER(_Timex)]
    func.restype = ctypes.c_int
    return func


def kernel_clock_synced() -> bool | None:
    """Whether the kernel considers the clock NTP-synchronised; None if adjtimex is unavailable."""
    func = _adjtimex()
    if func is None:
        return None
    tx = _Timex()  # modes=0: read only, needs no privilege
    state = func(ctypes.byref(tx))
    if state == -1:
        return None
    return state != TIME_ERROR and not tx.status & STA_UNSYNC


def read_boot_id(path: str = BOOT_ID_PATH) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


@dataclass(frozen=True)
class Correction:
    """The wall clock was stepped by delta_ms; readings stamped in [from_ms, until_ms] predate it."""

    delta_ms: int
    from_ms: int
    until_ms: int
    detected_ms: int
    boot_id: str

    def record(self) -> dict[str, object]:
        return {
            "event": "clock_corrected",
            "delta_ms": self.delta_ms,
            "from": self.from_ms,
            "until": self.until_ms,
            "detected": self.detected_ms,
            "boot_id": self.boot_id,
        }

    def apply(self, ts_ms: int) -> int:
        return ts_ms + self.delta_ms if self.from_ms <= ts_ms <= self.until_ms else ts_ms


class ClockWatch:
    """Polled from the main loop: tracks sync state and turns wall-clock steps into Corrections.

    Every step above jump_threshold_ms yields a Correction, including one while already synced
    (a hand-set clock or a large NTP step); read `synced` before poll() to tell them apart.
    After a jump the next range starts where the corrected previous one starts, so Corrections
    applied in order compose when the clock is stepped more than once.

    Caveat for backward steps: readings taken between the step and the poll that sees it carry
    new-clock stamps that may fall inside the old range; re-time those with mono_to_wall().
    """

    def __init__(
        self,
        *,
        synced: Callable[[], bool | None] = kernel_clock_synced,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        jump_threshold_ms: int = 2000,
        check_every_s: float = 10.0,
        assume_synced: bool = False,
    ) -> None:
        self._check_synced = synced
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._threshold_ns = jump_threshold_ms * _NS_PER_MS
        self._check_every_ns = int(check_every_s * 1e9)
        # With assume_synced the kernel is never asked (e.g. no adjtimex, or a board with an RTC).
        self._synced = assume_synced
        self._last_check_mono: int | None = None
        # From construction on, not from the first poll: the readings of the first poll cycle
        # are taken before it and must be covered by the first correction too.
        wall, mono = self._wall_ns(), self._mono_ns()
        self._offset_ns = wall - mono
        self._from_ms = wall // _NS_PER_MS
        self.boot_id = read_boot_id()

    @property
    def synced(self) -> bool:
        """Latched: once the kernel has said synchronised, stays True."""
        return self._synced

    def poll(self) -> Correction | None:
        wall = self._wall_ns()
        mono = self._mono_ns()
        offset = wall - mono
        correction = None
        if abs(offset - self._offset_ns) > self._threshold_ns:
            delta_ns = offset - self._offset_ns
            correction = Correction(
                delta_ms=(delta_ns + _NS_PER_MS // 2) // _NS_PER_MS,
                from_ms=self._from_ms,
                # The old clock's reading now: the latest a pre-jump reading can be stamped.
                until_ms=(mono + self._offset_ns) // _NS_PER_MS,
                detected_ms=wall // _NS_PER_MS,
                boot_id=self.boot_id,
            )
            self._from_ms = correction.from_ms + correction.delta_ms
        self._offset_ns = offset
        # A step usually comes with the kernel's sync flag, so ask at once rather than leave
        # good readings flagged unsynced for up to check_every_s.
        if not self._synced and (
            correction is not None
            or self._last_check_mono is None
            or mono - self._last_check_mono >= self._check_every_ns
        ):
            self._last_check_mono = mono
            self._synced = self._check_synced() is True
        return correction

    def mono_to_wall(self, mono_ns: int) -> int:
        """Wall time in ms, under the current offset, of a moment read from the monotonic clock."""
        return (mono_ns + self._offset_ns) // _NS_PER_MS


def stamp(watch: ClockWatch, batch: Iterable[Snapshot]) -> Correction | None:
    """Poll the clock for a poll cycle's snapshots (before they are committed): re-time them if
    the clock has just been stepped, flag them `clock_unsynced` while it is not synchronised."""
    was_synced = watch.synced
    correction = watch.poll()
    if correction is not None:
        log.warning(
            "wall clock stepped by %+d ms (%s); readings since %d re-timed",
            correction.delta_ms,
            "synchronised" if watch.synced and not was_synced else "clock set",
            correction.from_ms,
        )
    unsynced = not watch.synced
    for snapshot in batch:
        if correction is not None:
            snapshot.ts_ms = correction.apply(snapshot.ts_ms)
        if unsynced:
            snapshot.clock_unsynced = True
    return correction


def correction_event(correction: Correction) -> dict[str, object]:
    """The record a clock step is published as, on the alarms stream (a one-shot event)."""
    return {
        "alarm": "event:clock_corrected",
        "state": "event",
        "kind": "clock_corrected",
        "device": "",
        "ts": correction.detected_ms,
        "severity": "info",
        "message": f"wall clock corrected by {correction.delta_ms:+d} ms",
        "detail": correction.record(),
    }
