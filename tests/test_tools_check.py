"""`cgw check`: emulated meters over a pty (one with a reversed CT), a real mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.emulation.load import LoadModel
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from drivers.snapshot import Snapshot
from gateway.localbroker import LocalBroker, free_port
from gateway.tools.check import (
    FAIL,
    OK,
    WARN,
    Finding,
    Limits,
    check_clock,
    exit_status,
    judge_values,
)
from tests.support.serial_pair import SocatPair, serial_pair


def cgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def line() -> Iterator[SocatPair]:
    """Unit 1: healthy SDM630; unit 3: SDM630 with the L2 CT reversed; nothing at unit 5."""
    meters = [
        EmulatedMeter(1, load_shipped_profile("eastron_sdm630")),
        EmulatedMeter(
            3, load_shipped_profile("eastron_sdm630"), load=LoadModel(seed=3, reversed_ct=2)
        ),
    ]
    with serial_pair() as pair, EmulatorServer(meters) as server:
        server.serve_serial(str(pair.a))
        yield pair


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    running = LocalBroker().start()
    yield running
    running.stop()


def write_config(folder: Path, port: Path, units: list[int], mqtt_port: int) -> Path:
    devices = "".join(
        f'[[devices]]\nid = "meter-{u}"\nbus = "rs485"\nunit = {u}\nprofile = "eastron_sdm630"\n'
        for u in units
    )
    path = folder / "gateway.toml"
    path.write_text(
        f'[gateway]\nid = "gw"\nsite = "s"\ndata_dir = "data"\nruntime_dir = "run"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
        f'[[buses]]\nid = "rs485"\ntype = "rtu"\nport = "{port}"\ntimeout_s = 0.2\n{devices}',
        encoding="utf-8",
    )
    return path


def statuses(report: dict[str, object]) -> dict[tuple[str, str], str]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return {(f["subject"], f["check"]): f["status"] for f in findings}


def test_reversed_ct_warns_silent_meter_fails_broker_ok(
    line: SocatPair, broker: LocalBroker, tmp_path: Path
) -> None:
    config = write_config(tmp_path, line.b, [1, 3, 5], broker.port)
    human = cgw("check", "--config", str(config), "--seconds", "1")
    assert human.returncode == 1, human.stderr
    assert "likely reversed CT on L2" in human.stdout
    assert human.stdout.strip().splitlines()[-1].startswith("FAIL: 1 problem")
    machine = cgw("check", "--config", str(config), "--seconds", "1", "--json")
    assert machine.returncode == 1
    report = json.loads(machine.stdout)
    found = statuses(report)
    assert found[("meter-1", "answers")] == OK and found[("meter-1", "voltage")] == OK
    assert found[("meter-1", "frequency")] == OK and found[("meter-1", "power direction")] == OK
    assert found[("meter-1", "active_energy_import_kwh")] == OK
    assert found[("meter-3", "power L2")] == WARN and ("meter-3", "power L1") not in found
    assert found[("meter-5", "answers")] == FAIL
    assert found[("broker", "reachable")] == OK
    assert found[("rs485", "keeps up")] == OK
    assert report["verdict"].startswith("FAIL")


def test_healthy_config_exits_0_and_unreachable_broker_fails(
    line: SocatPair, broker: LocalBroker, tmp_path: Path
) -> None:
    healthy = cgw(
        "check",
        "--config",
        str(write_config(tmp_path, line.b, [1], broker.port)),
        "--seconds",
        "0.5",
    )
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    (tmp_path / "closed").mkdir()
    closed = write_config(tmp_path / "closed", line.b, [1], free_port())
    result = cgw("check", "--config", str(closed), "--seconds", "0.5", "--json")
    assert result.returncode == 1
    found = statuses(json.loads(result.stdout))
    assert found[("broker", "reachable")] == FAIL and found[("meter-1", "answers")] == OK


def test_a_busy_port_is_explained_not_fought_over(
    line: SocatPair, broker: LocalBroker, tmp_path: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; f = open({str(line.b)!r}, 'rb'); time.sleep(30)"]
    )
    try:
        time.sleep(0.5)
        result = cgw(
            "check", "--config", str(write_config(tmp_path, line.b, [1], broker.port)), "--json"
        )
    finally:
        holder.kill()
        holder.wait()
    report = json.loads(result.stdout)
    busy = [f for f in report["findings"] if f["check"] == "port busy"]
    assert busy and "in use by" in busy[0]["detail"] and "systemctl stop cgw" in busy[0]["detail"]


def snapshot(ts_ms: int, **values: float) -> Snapshot:
    return Snapshot("m", ts_ms, "ok", values=values)


def test_judging_values() -> None:
    limits = Limits.nominal(230, 50)
    before = snapshot(0, active_energy_import_kwh=100.0)
    after = snapshot(
        5000,
        active_energy_import_kwh=99.0,
        active_power_w=500.0,
        voltage_l1_v=150.0,
        frequency_hz=51.0,
    )
    found = {f.check: f.status for f in judge_values("m", before, after, 5.0, limits)}
    assert found == {"active_energy_import_kwh": FAIL, "voltage": WARN, "frequency": WARN}
    stuck = snapshot(10000, active_energy_import_kwh=100.0, active_power_w=5000.0)
    assert [f.status for f in judge_values("m", before, stuck, 10.0, limits)] == [WARN]
    idle = snapshot(10000, active_energy_import_kwh=100.0, active_power_w=5.0)
    assert [f.status for f in judge_values("m", before, idle, 10.0, limits)] == [OK]
    sixty = Limits.nominal(120, 60)
    ok = {
        f.check: f.status
        for f in judge_values(
            "m", before, snapshot(1, voltage_l1_v=121, frequency_hz=60.1), 5, sixty
        )
    }
    assert ok == {"voltage": OK, "frequency": OK}


def test_clock_and_exit_conventions() -> None:
    early = check_clock(datetime(2001, 1, 1, tzinfo=UTC), synchronised=None)
    assert [f.status for f in early] == [FAIL, WARN]
    assert [f.status for f in check_clock(datetime(2030, 1, 1, tzinfo=UTC), synchronised=True)] == [
        OK,
        OK,
    ]
    warning = [Finding(WARN, "clock", "synchronised", "")]
    assert exit_status(warning, strict=False) == 0 and exit_status(warning, strict=True) == 1
    assert exit_status([Finding(FAIL, "x", "y", "")], strict=False) == 1
