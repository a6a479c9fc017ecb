"""ClockWatch against simulated clocks (the real kernel clock cannot be stepped in a test)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from gateway.clock import ClockWatch, Correction, kernel_clock_synced

MS = 1_000_000
S = 1_000 * MS
DAY_MS = 86_400_000
FAKE_HWCLOCK_NS = 1_700_000_000 * S  # the last shutdown time fake-hwclock restored


class FakeClock:
    def __init__(self, wall_ns: int = FAKE_HWCLOCK_NS) -> None:
        self.mono = 5 * S  # some seconds after boot
        self.wall = wall_ns
        self.kernel_synced: bool | None = False
        self.synced_calls = 0

    def wall_ns(self) -> int:
        return self.wall

    def mono_ns(self) -> int:
        return self.mono

    def synced(self) -> bool | None:
        self.synced_calls += 1
        return self.kernel_synced

    def advance(self, ns: int) -> None:
        self.mono += ns
        self.wall += ns

    def watch(self, check_every_s: float = 10.0, assume_synced: bool = False) -> ClockWatch:
        return ClockWatch(
            synced=self.synced,
            wall_ns=self.wall_ns,
            mono_ns=self.mono_ns,
            check_every_s=check_every_s,
            assume_synced=assume_synced,
        )


def run(clock: FakeClock, watch: ClockWatch, seconds: float) -> list[Correction]:
    """Poll every 0.2 s for `seconds`, as the daemon's main loop does."""
    found = []
    for _ in range(round(seconds / 0.2)):
        clock.advance(200 * MS)
        c = watch.poll()
        if c is not None:
            found.append(c)
    return found


def test_ntp_jump_forward_after_unsynced_start() -> None:
    clock = FakeClock()
    watch = clock.watch()
    assert watch.poll() is None
    assert not watch.synced
    assert run(clock, watch, 30) == []
    assert not watch.synced
    old_now_ms = clock.wall // MS
    clock.advance(100 * MS)
    clock.wall += 3 * DAY_MS * MS  # NTP steps the clock and clears STA_UNSYNC
    clock.kernel_synced = True
    c = watch.poll()
    assert c == Correction(
        delta_ms=3 * DAY_MS,
        from_ms=FAKE_HWCLOCK_NS // MS,
        until_ms=old_now_ms + 100,
        detected_ms=old_now_ms + 100 + 3 * DAY_MS,
        boot_id=watch.boot_id,
    )
    assert watch.synced  # asked at once on the jump, not 10 s later
    assert run(clock, watch, 30) == []
    record = c.record()
    assert record == {
        "event": "clock_corrected",
        "delta_ms": 3 * DAY_MS,
        "from": FAKE_HWCLOCK_NS // MS,
        "until": old_now_ms + 100,
        "detected": old_now_ms + 100 + 3 * DAY_MS,
        "boot_id": watch.boot_id,
    }
    json.dumps(record)


def test_apply_maps_exactly_and_agrees_with_mono_to_wall() -> None:
    clock = FakeClock()
    watch = clock.watch()
    watch.poll()
    run(clock, watch, 10)
    reading_mono = clock.mono
    reading_ts = clock.wall // MS  # stamped with the wrong clock
    run(clock, watch, 10)
    clock.wall += 3 * DAY_MS * MS
    c = watch.poll()
    assert c is not None
    assert c.apply(reading_ts) == reading_ts + 3 * DAY_MS == watch.mono_to_wall(reading_mono)
    assert c.apply(c.from_ms) == c.from_ms + c.delta_ms
    assert c.apply(c.until_ms) == c.until_ms + c.delta_ms
    assert c.apply(c.from_ms - 1) == c.from_ms - 1
    assert c.apply(c.until_ms + 1) == c.until_ms + 1
    assert c.apply(c.detected_ms) == c.detected_ms  # stamped after the jump: left alone


def test_slew_and_steps_below_threshold_are_not_jumps() -> None:
    clock = FakeClock()
    watch = clock.watch()
    watch.poll()
    for _ in range(10_000):  # 5 s drift in total, 0.5 ms per poll
        clock.advance(200 * MS)
        clock.wall += MS // 2
        assert watch.poll() is None
    clock.wall += 1_999 * MS
    assert watch.poll() is None
    clock.wall += 2_001 * MS
    c = watch.poll()
    assert c is not None and c.delta_ms == 2_001


def test_backward_jump() -> None:
    clock = FakeClock(wall_ns=FAKE_HWCLOCK_NS + DAY_MS * MS)  # restored time is ahead
    watch = clock.watch()
    watch.poll()
    run(clock, watch, 5)
    reading_ts = clock.wall // MS
    clock.advance(200 * MS)
    clock.wall -= DAY_MS * MS
    clock.kernel_synced = True
    c = watch.poll()
    assert c is not None
    assert c.delta_ms == -DAY_MS
    assert c.from_ms == FAKE_HWCLOCK_NS // MS + DAY_MS
    assert c.until_ms == reading_ts + 200
    assert c.detected_ms == c.until_ms - DAY_MS
    assert c.apply(reading_ts) == reading_ts - DAY_MS
    assert watch.synced


def test_jump_while_synced_is_still_reported() -> None:
    clock = FakeClock()
    clock.kernel_synced = True
    watch = clock.watch()
    watch.poll()
    assert watch.synced
    run(clock, watch, 5)
    clock.wall += 5 * S  # set by hand
    c = watch.poll()
    assert c is not None and c.delta_ms == 5_000
    assert watch.synced


def test_two_steps_compose() -> None:
    clock = FakeClock()
    watch = clock.watch()
    watch.poll()
    run(clock, watch, 5)
    reading_mono, reading_ts = clock.mono, clock.wall // MS
    run(clock, watch, 1)
    clock.wall += DAY_MS * MS
    first = watch.poll()
    run(clock, watch, 1)
    clock.wall += 3_600_000 * MS
    second = watch.poll()
    assert first is not None and second is not None
    assert second.apply(first.apply(reading_ts)) == watch.mono_to_wall(reading_mono)


def test_kernel_is_asked_at_most_once_per_check_every_s() -> None:
    clock = FakeClock()
    watch = clock.watch(check_every_s=10.0)
    watch.poll()
    assert clock.synced_calls == 1
    run(clock, watch, 60)
    assert clock.synced_calls == 7  # at 0, 10, 20, ..., 60 s
    clock.kernel_synced = True
    run(clock, watch, 9.8)
    assert not watch.synced and clock.synced_calls == 7
    run(clock, watch, 0.2)
    assert watch.synced and clock.synced_calls == 8
    run(clock, watch, 60)
    assert clock.synced_calls == 8  # latched: never asked again


@pytest.mark.parametrize(("assume", "expected"), [(False, False), (True, True)])
def test_unknown_kernel_state_follows_config(assume: bool, expected: bool) -> None:
    clock = FakeClock()
    clock.kernel_synced = None
    watch = clock.watch(assume_synced=assume)
    watch.poll()
    run(clock, watch, 30)
    assert watch.synced is expected
    assert clock.synced_calls == (0 if assume else 4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux-only")
def test_real_kernel_clock() -> None:
    assert isinstance(kernel_clock_synced(), bool)
    watch = ClockWatch()
    assert watch.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    for _ in range(5):
        assert watch.poll() is None
        time.sleep(0.01)
    assert abs(watch.mono_to_wall(time.monotonic_ns()) - time.time_ns() // MS) < 100


def test_readings_taken_before_the_first_poll_are_covered_by_the_first_correction() -> None:
    # The daemon's first poll cycle reads the meters, then polls the clock: those first readings
    # were stamped under the same wrong clock and need the same correction (found by the HIL
    # clock-step scenario: the first readings of a run were left two hours off).
    clock = FakeClock()
    watch = clock.watch()
    clock.advance(150 * MS)
    first_reading_ms = clock.wall // MS
    assert watch.poll() is None
    clock.wall += 7200 * S  # NTP steps the clock
    clock.advance(200 * MS)
    correction = watch.poll()
    assert correction is not None and correction.from_ms <= first_reading_ms
    assert correction.apply(first_reading_ms) == first_reading_ms + 7_200_000
