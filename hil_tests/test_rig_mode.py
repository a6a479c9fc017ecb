"""Rig mode: the same scenarios on adapters named in a ports file (`CGW_RIG_PORTS`). Here a socat
pty pair stands in for the rig's two cross-wired adapters: real serial devices to both sides,
opened by name from the file, not paced by the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.tomltable import ConfigError
from hil_tests.lines import RIG_PORTS, rig_pairs
from tests.support.serial_pair import serial_pair

HERE = Path(__file__).resolve().parent


def test_a_scenario_runs_on_the_ports_a_rig_file_names(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with serial_pair() as adapters:
        ports = tmp_path / "rig-ports.toml"
        ports.write_text(f'[[pairs]]\nemulator = "{adapters.a}"\ngateway = "{adapters.b}"\n')
        env = {
            **os.environ,
            RIG_PORTS: str(ports),
            "CGW_HIL_LONG": "0",
            "CGW_HIL_RESULTS": str(results),
        }
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(HERE / "test_torture_silent.py"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stdout[-3000:]
    figures = json.loads((results / "torture_silent_meter.short.json").read_text())
    assert figures["line"] == "rig" and figures["neighbour_polls"] > 0


def test_a_ports_file_names_what_is_wrong(tmp_path: Path) -> None:
    ports = tmp_path / "rig-ports.toml"
    ports.write_text('[[pairs]]\nemulator = "/dev/nonexistent-adapter"\ngateway = "/dev/null"\n')
    with pytest.raises(ConfigError) as caught:
        rig_pairs(str(ports))
    assert caught.value.key == "pairs[0].emulator" and "no such device" in caught.value.message
    ports.write_text('[[pairs]]\nemulator = "/dev/null"\ngateway = "/dev/null"\nusb = "x"\n')
    with pytest.raises(ConfigError, match=r"pairs\[0\]\.usb: unknown key"):
        rig_pairs(str(ports))
    ports.write_text("")
    with pytest.raises(ConfigError, match="pairs: is required"):
        rig_pairs(str(ports))
