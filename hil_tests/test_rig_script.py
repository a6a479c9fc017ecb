"""A scripted floor through `cgw emulate --rig FILE` and the real daemon, on one RS-485 line at
9600 baud: three Modbus meters and a DL/T 645 meter, whose script drops one meter's load to a
quarter, silences another, slows a third past the gateway's timeout, puts noise on the line, and
replaces the DL/T 645 meter by a new one. Each phase must show in what the gateway recorded, and
nothing else may break."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

from hil_tests.conftest import size
from hil_tests.lines import line_pair
from hil_tests.records import buffered_records, readings_of
from tests.support.gateway import DaemonProcess

PHASE_S = size(8, 40)  # each phase of the script, in seconds
MARGIN_S = 2.0  # readings this close to a phase change are not judged
INTERVAL_S = 1.0
TIMEOUT_S = 0.5
BACKOFF_MAX_S = 2.0
DLT645_ADDRESS = "000000000004"


def rig_text(port: str, paced: bool) -> str:
    p = PHASE_S
    return f"""
[rig]
seed = 11
duration_s = {6 * p}

[[lines]]
id = "board"
serial = "{port}"
baudrate = 9600
baud_accurate = {str(paced).lower()}

[[meters]]
id = "press"
line = "board"
unit = 1
profile = "eastron_sdm630"
load = [[0, 1.0], [{p}, 1.0], [{p + 0.01}, 0.25], [{2 * p}, 0.25], [{2 * p + 0.01}, 1.0]]

[[meters]]
id = "oven"
line = "board"
unit = 2
profile = "chint_dtsu666"

[[meters]]
id = "pump"
line = "board"
unit = 3
profile = "eastron_sdm630"
slow_s = {1.5 * TIMEOUT_S}

[[meters]]
id = "office"
line = "board"
dlt645 = "{DLT645_ADDRESS}"

[[events]]
at_s = {p}
meter = "oven"
fault = "silent"

[[events]]
at_s = {2 * p}
meter = "oven"
fault = "none"

[[events]]
at_s = {2 * p}
meter = "pump"
fault = "slow"

[[events]]
at_s = {3 * p}
meter = "pump"
fault = "none"

[[events]]
at_s = {3 * p}
line = "board"
noise = 0.3

[[events]]
at_s = {4 * p}
line = "board"
noise = 0.0

[[events]]
at_s = {5 * p}
meter = "office"
replace = true
import_kwh = 0.5
"""


def gateway_text(port: str) -> str:
    modbus = "".join(
        f'[[devices]]\nid = "{name}"\nbus = "board"\nunit = {unit}\nprofile = "{profile}"\n'
        f'interval_s = {INTERVAL_S}\nquantities = ["voltage_l1_v", "active_power_w", '
        f'"active_energy_import_kwh"]\n'
        for name, unit, profile in (
            ("press", 1, "eastron_sdm630"),
            ("oven", 2, "chint_dtsu666"),
            ("pump", 3, "eastron_sdm630"),
        )
    )
    return (
        '[gateway]\nid = "gw-rig"\nsite = "lab"\nclock = "trusted"\ndata_dir = "data"\nruntime_dir = "run"\n'
        "[buffer]\ncommit_interval_s = 0.5\n[mqtt]\nenabled = false\n"
        "[accounting]\ninterval_min = 1\ngrace_s = 2\ncheckpoint_s = 1\n"
        '[[accounting.meters]]\ndevice = "office"\nrole = "load"\n'
        f'[[buses]]\nid = "board"\ntype = "rtu"\nport = "{port}"\nbaudrate = 9600\n'
        f"timeout_s = {TIMEOUT_S}\nbackoff_max_s = {BACKOFF_MAX_S}\n"
        + modbus
        + f'[[devices]]\nid = "office"\nbus = "board"\nprotocol = "dlt645"\n'
        f'address = "{DLT645_ADDRESS}"\ninterval_s = {INTERVAL_S}\n'
    )


def phase(records: list[dict[str, Any]], device: str, start: float, number: int) -> list[Any]:
    """A device's readings inside phase `number` (0-based), away from its edges."""
    low = start + number * PHASE_S + MARGIN_S
    high = start + (number + 1) * PHASE_S - MARGIN_S
    return [r for r in readings_of(records, device) if low <= int(r["ts"]) / 1000 <= high]


def ok(readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in readings if r["quality"] == "ok"]


def ok_share(readings: list[dict[str, Any]]) -> float:
    return len(ok(readings)) / len(readings)


def test_a_scripted_floor_shows_in_what_the_gateway_records(
    tmp_path: Path, record: Callable[..., None]
) -> None:
    with line_pair() as line:
        rig_file = tmp_path / "rig.toml"
        rig_file.write_text(rig_text(line.emulator, paced=line.mode == "emulated"))
        emulate = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "emulate", "--rig", str(rig_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            start = time.time()
            config = tmp_path / "gateway.toml"
            config.write_text(gateway_text(line.gateway))
            daemon = DaemonProcess(config).start().wait_running()
            out, err = emulate.communicate(timeout=6 * PHASE_S + 30)
            assert emulate.returncode == 0, err
            assert daemon.stop() == 0
        finally:
            if emulate.poll() is None:
                emulate.kill()
    records = buffered_records(tmp_path / "data" / "buffer.db")
    # The script ran as written: every event announced at its time.
    assert out.count("t=") == 7 and "replaced by a new meter" in out
    # 0: all normal.
    for device in ("press", "oven", "pump", "office"):
        assert ok_share(phase(records, device, start, 0)) == 1.0, device
    # 1: the press at a quarter of its load; the oven silent, every poll a timeout record.
    power = {
        n: mean(r["values"]["active_power_w"] for r in ok(phase(records, "press", start, n)))
        for n in (0, 1, 2)
    }
    assert 0.1 < power[1] / mean((power[0], power[2])) < 0.45
    silent = phase(records, "oven", start, 1)
    assert silent and all(r["quality"] == "timeout" for r in silent)
    # 2: the pump answers after the gateway has given up: timeouts, then backoff. Its late
    # answers land on the line during the next device's read (the office's, polled after it)
    # and collide with it as on RS-485: the checksum refuses what arrives, nothing wrong is
    # believed. The meters polled before it do not notice.
    slow = phase(records, "pump", start, 2)
    assert slow and all(r["quality"] == "timeout" for r in slow)
    during_slow = {d: ok_share(phase(records, d, start, 2)) for d in ("press", "oven", "office")}
    assert during_slow["press"] == during_slow["oven"] == 1.0, during_slow
    collided = [r for r in phase(records, "office", start, 2) if r["quality"] != "ok"]
    assert all(r["quality"] == "invalid_response" for r in collided)
    # 3: noise: some answers refused (the CRC or checksum caught the flipped bit), none believed
    # wrong: every accepted voltage is plausible.
    noisy = [r for d in ("press", "oven", "pump", "office") for r in phase(records, d, start, 3)]
    refused = [r for r in noisy if r["quality"] != "ok"]
    assert refused and {r["quality"] for r in refused} <= {"invalid_response", "timeout"}
    accepted_volts = [
        r["values"]["voltage_l1_v"] for r in ok(noisy) if "voltage_l1_v" in r["values"]
    ]
    assert accepted_volts and all(200 < v < 260 for v in accepted_volts)
    # 4: back to normal everywhere.
    for device in ("press", "oven", "pump", "office"):
        assert ok_share(phase(records, device, start, 4)) == 1.0, device
    # 5: the new meter: its counter starts again from 0.5 kWh, and accounting says so.
    before = ok(phase(records, "office", start, 4))[-1]["values"]["active_energy_import_kwh"]
    after = ok(phase(records, "office", start, 5))[0]["values"]["active_energy_import_kwh"]
    assert before > 1000 and 0.5 <= after < 0.6
    resets = [
        r for r in records if r.get("kind") == "counter_reset" and r.get("device") == "office"
    ]
    assert len(resets) == 1
    assert "Traceback" not in daemon.logs() and "Traceback" not in err
    record(
        "rig_script",
        line=line.mode,
        phase_s=PHASE_S,
        load_quarter_power_ratio=round(power[1] / mean((power[0], power[2])), 2),
        silent_timeouts=len(silent),
        slow_timeouts=len(slow),
        ok_share_of_the_next_device_while_slow=round(during_slow["office"], 2),
        noise_refused=len(refused),
        noise_accepted=len(noisy) - len(refused),
        counter_resets=len(resets),
    )
