"""Clock jumps forward and back, as on a board with no RTC: the daemon starts on a wall clock two
hours behind (what fake-hwclock restored), NTP steps it three hours forward (a bad server: now an
hour ahead), then one hour back to the truth. The monotonic clock never moves, as with a real
step. The daemon's wall clock is stepped by a preloaded shim (hil_tests/clockstep/clockstep.c),
because stepping this machine's own clock would disturb everything else on it.

Then, at the platform: every poll delivered, the chain intact, one `clock_corrected` event per
step, and the readings' timestamps, corrected by those events as CONTRACT.md says, are the true
times: in order, at the poll interval, inside the test's true start and end. The poll cadence runs
on the monotonic clock: no burst of catch-up polls after the step forward, no stall after the
step back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

from drivers.emulation.server import EmulatorServer
from gateway.localbroker import LocalBroker
from hil_tests.conftest import size
from hil_tests.records import delivered_records, verified
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import Subscriber, wait_until

HERE = Path(__file__).resolve().parent
INTERVAL_S = 0.2
HOUR_MS = 3_600_000
STEPS_MS = (-2 * HOUR_MS, +1 * HOUR_MS, 0)  # the wall clock's error in each phase
METERS = [Meter("incomer", 1), Meter("compressor", 2, "chint_dtsu666")]


def clockstep_library(folder: Path) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the clock-step shim (./dev test installs it)"
    library = folder / "clockstep.so"
    subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O2",
            "-o",
            str(library),
            str(HERE / "clockstep" / "clockstep.c"),
            "-ldl",
        ],
        check=True,
    )
    return library


def stream_envelopes(platform: Subscriber) -> list[bytes]:
    """Every envelope the platform received: readings and alarms share the gateway's chain."""
    return [m.payload for leaf in ("readings", "alarms") for m in platform.on(leaf)]


def seqs(bodies: list[bytes]) -> set[int]:
    return {json.loads(b)["seq"] for b in bodies}


def corrected(ts: int, corrections: list[dict[str, Any]]) -> int:
    """A reading's time with every clock correction applied in order (docs/CONTRACT.md)."""
    for c in corrections:
        if c["from"] <= ts <= c["until"]:
            ts += c["delta_ms"]
    return ts


def test_clock_steps_forward_and_back_are_corrected_and_lose_nothing(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer, record: Callable[..., None]
) -> None:
    phase_s = size(4.0, 60.0)
    library = clockstep_library(tmp_path)
    step_file = tmp_path / "clock-step"
    step_file.write_text(str(STEPS_MS[0]))
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=emulator.serve_tcp(),
        mqtt_port=broker.port,
        interval_s=INTERVAL_S,
    )
    env = {"LD_PRELOAD": str(library), "CGW_CLOCK_STEP_FILE": str(step_file)}
    true_start = time.time() * 1000
    mono_start = time.monotonic()
    with Subscriber(broker.port) as platform:
        daemon = DaemonProcess(config, env=env).start().wait_running()
        for error_ms in STEPS_MS[1:]:
            time.sleep(phase_s)
            step_file.write_text(str(error_ms))
        time.sleep(phase_s)
        assert daemon.stop() == 0
        true_end = time.time() * 1000
        mono_s = time.monotonic() - mono_start
        # What was sealed on the way out goes at the next start (on the true clock by now).
        emulator.stop()
        drain = DaemonProcess(config).start().wait_running()
        wait_until(lambda: drain.buffer().stats().backlog_envelopes == 0, 30, "the drain")
        last_seq = drain.buffer().last_seq
        assert drain.stop() == 0
        wait_until(
            lambda: seqs(stream_envelopes(platform)) >= set(range(1, last_seq + 1)),
            30,
            "every envelope",
        )
        bodies = stream_envelopes(platform)
    gateway = verified(tmp_path / "data", bodies)
    assert gateway.missing == [] and gateway.first_seq == 1 and gateway.last_seq >= last_seq
    corrections = [
        r["detail"] for r in delivered_records(bodies, "alarms") if r["kind"] == "clock_corrected"
    ]
    assert [c["delta_ms"] // 1000 for c in corrections] == [3 * 3600, -3600]
    # (The drain's run, with the meters gone, adds `no_connection` readings after the end.)
    readings = [r for r in delivered_records(bodies, "readings") if r["quality"] == "ok"]
    worst_ms = 0
    polls = {}
    for meter in METERS:
        times = [corrected(r["ts"], corrections) for r in readings if r["device"] == meter.id]
        polls[meter.id] = len(times)
        # The true times: in poll order, never further apart than a poll or two, inside the run.
        gaps = [b - a for a, b in pairwise(times)]
        assert min(gaps) > 0 and max(gaps) < 3 * INTERVAL_S * 1000, meter.id
        assert true_start - 1000 < times[0] and times[-1] < true_end + 1000, meter.id
        worst_ms = max(worst_ms, max(gaps))
        # The cadence held on the monotonic clock: no catch-up burst, no stall.
        owed = (mono_s - 1.0) / INTERVAL_S
        assert 0.85 * owed <= len(times) <= owed + 10, meter.id
    assert "Traceback" not in daemon.logs()
    record(
        "torture_clock",
        steps_s=[c["delta_ms"] // 1000 for c in corrections],
        phase_s=phase_s,
        readings=len(readings),
        polls_per_meter=min(polls.values()),
        polls_owed_per_meter=int(mono_s / INTERVAL_S),
        widest_gap_after_correction_s=round(worst_ms / 1000, 2),
        envelopes=last_seq,
    )
