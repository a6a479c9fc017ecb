"""`cgw read` and `cgw scan` against emulated meters over a socat pty pair and Modbus TCP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.dlt645.emulation import EmulatedDlt645Meter
from drivers.dlt645.identifiers import Dlt645Device
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from gateway.config import Device, load
from tests.support.serial_pair import SocatPair, serial_pair

DLT645_ADDRESS = "123456789012"


def cgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def line() -> Iterator[SocatPair]:
    """An SDM630 at unit 1, an iEM3155 at unit 7 and a DL/T 645 meter on one line."""
    meters = [
        EmulatedMeter(1, load_shipped_profile("eastron_sdm630")),
        EmulatedMeter(7, load_shipped_profile("schneider_iem3x55")),
    ]
    with (
        serial_pair() as pair,
        EmulatorServer(meters, [EmulatedDlt645Meter(DLT645_ADDRESS)]) as server,
    ):
        server.serve_serial(str(pair.a))
        yield pair


def test_read_prints_the_table_with_mains_voltage(line: SocatPair) -> None:
    result = cgw(
        "read", "--port", str(line.b), "--unit", "1", "--profile", "eastron_sdm630", "--explain"
    )
    assert result.returncode == 0, result.stderr
    volts = re.search(r"^voltage_l1_v\s+([\d.]+)\s+V", result.stdout, re.M)
    assert volts is not None and 220 < float(volts.group(1)) < 240
    assert "minimum wire time per poll" in result.stdout  # --explain


def test_read_of_a_silent_unit_fails_with_the_hint(line: SocatPair) -> None:
    result = cgw(
        "read",
        "--port",
        str(line.b),
        "--unit",
        "5",
        "--profile",
        "eastron_sdm630",
        "--timeout",
        "0.2",
    )
    assert result.returncode == 1
    assert (
        "unit 5" in result.stderr
        and "A/B swapped" in result.stderr
        and "wrong unit id" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_read_of_the_dlt645_meter(line: SocatPair) -> None:
    result = cgw("read", "--port", str(line.b), "--dlt645", DLT645_ADDRESS, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["quality"] == "ok" and 220 < record["values"]["voltage_l1_v"] < 240


def test_scan_finds_both_modbus_models_and_the_dlt645_meter(
    line: SocatPair, tmp_path: Path
) -> None:
    result = cgw(
        "scan", str(line.b), "--units", "1-8", "--baudrates", "9600", "--parity", "N", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert "at most" in result.stderr  # the time bound is announced before scanning
    report = json.loads(result.stdout)
    by_unit = {f["unit"]: f for f in report["found"] if f["unit"] is not None}
    assert set(by_unit) == {1, 7}
    assert by_unit[1]["profile"] == "eastron_sdm630" and "plausibly" in by_unit[1]["how"]
    assert (
        by_unit[7]["profile"] == "schneider_iem3x55"
        and "identification register" in by_unit[7]["how"]
    )
    assert [f["address"] for f in report["found"] if f["address"]] == [DLT645_ADDRESS]
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nid = "gw"\nsite = "s"\n\n' + report["snippet"], encoding="utf-8")
    devices = load(config).devices
    assert sorted(d.unit for d in devices if isinstance(d, Device)) == [1, 7]
    assert [d.address for d in devices if isinstance(d, Dlt645Device)] == [DLT645_ADDRESS]


def test_scan_human_output_has_table_and_snippet(line: SocatPair) -> None:
    result = cgw(
        "scan", str(line.b), "--units", "1,7", "--baudrates", "9600", "--parity", "N", "--no-dlt645"
    )
    assert result.returncode == 0, result.stderr
    assert "identified by" in result.stdout and "[[devices]]" in result.stdout
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal


def test_scan_over_tcp_and_nothing_found() -> None:
    with EmulatorServer([EmulatedMeter(3, load_shipped_profile("eastron_sdm630"))]) as server:
        port = server.serve_tcp()
        found = cgw("scan", "--tcp", f"127.0.0.1:{port}", "--units", "1-4", "--json")
        assert found.returncode == 0, found.stderr
        (meter,) = json.loads(found.stdout)["found"]
        assert meter["unit"] == 3 and meter["profile"] == "eastron_sdm630"
        empty = cgw("scan", "--tcp", f"127.0.0.1:{port}", "--units", "5-6")
        assert empty.returncode == 1 and "nothing answered" in empty.stdout


def test_scan_of_a_missing_port_is_one_line() -> None:
    result = cgw(
        "scan", "/dev/does-not-exist", "--units", "1", "--baudrates", "9600", "--parity", "N"
    )
    assert result.returncode == 1 and "cannot open" in result.stderr
    assert "Traceback" not in result.stderr
