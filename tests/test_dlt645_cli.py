"""`cgw emulate --dlt645`: DL/T 645 meters next to Modbus meters on one emulated line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import serial

from drivers.dlt645.client import Dlt645Link


def emulate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "emulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_emulate_serves_a_dlt645_meter_beside_a_modbus_meter(tmp_path: Path) -> None:
    link_path = tmp_path / "ttyEMU"
    process = emulate(
        "--pty", str(link_path), "--meter", "1:eastron_sdm630", "--dlt645", "123456789012"
    )
    try:
        deadline = time.monotonic() + 20
        while not link_path.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with serial.Serial(str(link_path), timeout=0.5) as port:
            link = Dlt645Link(port)
            assert link.read_address() == "123456789012"
            snapshot = link.read_device("dlt", "123456789012", ["02010100"])
            assert snapshot.quality == "ok" and 220 < snapshot.values["voltage_l1_v"] < 240
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "serving unit 1 eastron_sdm630" in out
    assert "serving DL/T 645 meter 123456789012" in out


def test_emulate_refuses_a_bad_dlt645_address_in_one_line() -> None:
    process = emulate("--pty", "unused-link", "--dlt645", "12345:silent")
    _out, err = process.communicate(timeout=20)
    assert process.returncode == 2
    assert err == "cgw emulate: --dlt645 '12345:silent': the address must be 12 decimal digits\n"
    assert "Traceback" not in err
