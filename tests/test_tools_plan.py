"""`cgw plan`: requests, bytes and the minimum wire time against FACTS.md §6."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.dlt645.identifiers import Dlt645Device
from drivers.profile import load_shipped_profile
from gateway.config import Device, SerialBus, TcpBus
from gateway.tools.plan import dlt645_plan, modbus_plan


def test_the_worked_example_of_facts_section_6() -> None:
    bus = SerialBus("b", "/dev/null", baudrate=9600, parity="E")
    assert bus.read_wire_s(60) * 1000 == pytest.approx(160.4, abs=0.05)


def test_sdm630_plan_counts_bytes_and_beats_one_request_per_quantity() -> None:
    bus = SerialBus("b", "/dev/null", baudrate=9600, parity="E")
    plan = modbus_plan(Device("m", "b", 1, load_shipped_profile("eastron_sdm630")), bus)
    first = plan.requests[0]
    assert (first.function, first.address) == (4, 0x0000)
    assert first.bytes_out == 8 and first.bytes_in == 5 + 2 * first.count
    character_ms = 11 / 9600 * 1000
    assert first.wire_ms == pytest.approx((13 + 2 * first.count + 7) * character_ms, abs=0.05)
    assert plan.total_wire_ms == pytest.approx(sum(r.wire_ms or 0 for r in plan.requests), abs=0.2)
    assert plan.one_per_quantity_wire_ms is not None and plan.total_wire_ms is not None
    assert plan.one_per_quantity_wire_ms > 2 * plan.total_wire_ms
    covered = [q for r in plan.requests for q in r.quantities]
    assert sorted(covered) == sorted(
        r.quantity for r in load_shipped_profile("eastron_sdm630").registers
    )


def test_tcp_plan_has_no_wire_time() -> None:
    plan = modbus_plan(
        Device("m", "t", 1, load_shipped_profile("eastron_sdm630")), TcpBus("t", "h")
    )
    assert plan.total_wire_ms is None and all(r.wire_ms is None for r in plan.requests)
    assert plan.requests[0].bytes_out == 12


def test_dlt645_plan_frame_sizes() -> None:
    bus = SerialBus("b", "/dev/null", baudrate=2400, parity="E")
    plan = dlt645_plan(Dlt645Device("d", "123456789012", identifiers=("00010000",)), bus)
    (line,) = plan.requests
    assert line.bytes_out == 20  # FACTS.md §8's example frame: 4 x FE + 16 bytes
    assert line.bytes_in == 24  # + 4 data bytes
    assert line.wire_ms == pytest.approx(44 * 11 / 2400 * 1000, abs=0.05)


def test_cgw_plan_command_human_and_json(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\nid = "gw"\nsite = "s"\n[mqtt]\nenabled = false\n'
        '[[buses]]\nid = "rs485"\ntype = "rtu"\nport = "/dev/null"\nbaudrate = 9600\nparity = "E"\n'
        '[[devices]]\nid = "sdm"\nbus = "rs485"\nunit = 1\nprofile = "eastron_sdm630"\n'
    )
    run = [sys.executable, "-m", "gateway.cli", "plan", "--config", str(config)]
    human = subprocess.run([*run, "sdm"], capture_output=True, text=True, timeout=30)
    assert human.returncode == 0, human.stderr
    assert "9600 8E1" in human.stdout and "FC04  0x0000" in human.stdout
    assert "one request per quantity instead" in human.stdout
    machine = subprocess.run([*run, "sdm", "--json"], capture_output=True, text=True, timeout=30)
    assert json.loads(machine.stdout)["requests"][0]["address"] == 0
    missing = subprocess.run([*run, "nope"], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "no device 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
