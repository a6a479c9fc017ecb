"""A meter silent for an hour, time-compressed: three SDM630s on one RS-485 line at 9600 baud (a
pty pair paced to the baud rate, or a rig's adapters), polled every 0.5 s by the real daemon; the
middle one stops answering for 240 poll intervals in the long run (an hour of 15 s polls; 20 in
the short one), then answers again.

While it is silent the others keep their cadence, the silent one is backed off and costs the line
little, every poll is still a record (`timeout`, so the platform sees the gap), and once it answers
it is back within one backoff step."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from hil_tests.conftest import size
from hil_tests.lines import gateway_on_a_line
from hil_tests.records import buffered_records
from tests.support.platform import wait_until

INTERVAL_S = 0.5
BACKOFF_MAX_S = 4.0
UNITS = {"east": 1, "quiet": 2, "west": 3}


def config_text(port: str) -> str:
    devices = "".join(
        f'[[devices]]\nid = "{name}"\nbus = "line"\nunit = {unit}\nprofile = "eastron_sdm630"\n'
        f'interval_s = {INTERVAL_S}\nquantities = ["voltage_l1_v", "active_power_w", '
        f'"active_energy_import_kwh"]\n'
        for name, unit in UNITS.items()
    )
    return (
        '[gateway]\nid = "gw-line"\nsite = "lab"\ndata_dir = "data"\nruntime_dir = "run"\n'
        "[buffer]\ncommit_interval_s = 0.5\n[mqtt]\nenabled = false\n"
        f'[[buses]]\nid = "line"\ntype = "rtu"\nport = "{port}"\nbaudrate = 9600\n'
        f"timeout_s = 0.3\nbackoff_after = 3\nbackoff_max_s = {BACKOFF_MAX_S}\n" + devices
    )


def test_a_silent_meter_costs_the_line_little_and_comes_back(
    tmp_path: Path, record: Callable[..., None]
) -> None:
    silent_polls = size(20, 240)
    sdm630 = load_shipped_profile("eastron_sdm630")
    meters = {name: EmulatedMeter(unit, sdm630, seed=unit) for name, unit in UNITS.items()}
    server = EmulatorServer(list(meters.values()))
    with gateway_on_a_line(tmp_path, server, config_text) as (line, daemon):
        time.sleep(3.0)
        meters["quiet"].fault = "silent"
        went_silent = time.time() * 1000
        time.sleep(silent_polls * INTERVAL_S)
        meters["quiet"].fault = None
        came_back = time.time() * 1000
        db = tmp_path / "data" / "buffer.db"
        wait_until(
            lambda: any(
                r["device"] == "quiet" and r["quality"] == "ok" and int(r["ts"]) > came_back
                for r in buffered_records(db)
            ),
            BACKOFF_MAX_S * 3,
            "the meter to be read again",
        )
        time.sleep(2.0)
        assert daemon.stop() == 0
    records = buffered_records(db)
    during = [r for r in records if went_silent + 1000 <= int(r["ts"]) <= came_back]
    seconds = (came_back - went_silent - 1000) / 1000
    by_device = {name: [r for r in during if r["device"] == name] for name in UNITS}
    # The others kept their cadence and kept answering.
    for name in ("east", "west"):
        assert len(by_device[name]) >= 0.9 * seconds / INTERVAL_S, name
        assert all(r["quality"] == "ok" for r in by_device[name]), name
    # The silent one: every attempt a `timeout` record, backed off to a few attempts.
    quiet = by_device["quiet"]
    assert quiet and all(r["quality"] == "timeout" for r in quiet)
    assert len(quiet) <= 3 + seconds / BACKOFF_MAX_S + 3
    back = next(
        int(r["ts"])
        for r in records
        if r["device"] == "quiet" and r["quality"] == "ok" and int(r["ts"]) > came_back
    )
    recovery_s = (back - came_back) / 1000
    assert recovery_s <= BACKOFF_MAX_S + INTERVAL_S + 1.0
    assert "Traceback" not in daemon.logs()
    record(
        "torture_silent_meter",
        line=line.mode,
        silent_s=round(seconds, 1),
        silent_polls_owed=silent_polls,
        attempts_while_silent=len(quiet),
        line_time_spent_s=round(len(quiet) * 0.3, 1),
        neighbour_polls=min(len(by_device["east"]), len(by_device["west"])),
        neighbour_polls_owed=int(seconds / INTERVAL_S),
        recovery_s=round(recovery_s, 2),
    )
