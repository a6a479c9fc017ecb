"""Rig files (`cgw emulate --rig`): checked with file and key, and scripted as written."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from drivers.emulation.rig import LoadShape, Rig, load_rig
from drivers.emulation.server import EmulatorServer
from gateway.config import SerialBus
from gateway.tomltable import ConfigError
from tests.support.serial_pair import serial_pair

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """
[[lines]]
id = "board"
pty = "{link}"

[[meters]]
id = "press"
line = "board"
unit = 1
profile = "eastron_sdm630"

[[meters]]
id = "office"
line = "board"
dlt645 = "000000000004"
"""


EVENT = "[[events]]\nat_s = 1\n"
X_METER = '[[meters]]\nid = "x"\nline = "board"\n'
X_SDM = X_METER + 'unit = 5\nprofile = "eastron_sdm630"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(text.replace("{link}", str(tmp_path / "tty")))
    return path


def test_the_shipped_example_loads() -> None:
    spec = load_rig(REPO / "docs" / "rigs" / "board.toml")
    assert [m.id for m in spec.meters] == ["press", "oven", "pump", "office"]
    assert [e.at_s for e in spec.events] == sorted(e.at_s for e in spec.events)
    assert spec.speed == 10 and spec.lines[0].baud_accurate is False  # a real port


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("[rig]\nspeed = 0\n", "rig.speed", "between"),
        ("[rig]\nsped = 2\n", "rig.sped", "unknown key"),
        (EVENT + 'meter = "nobody"\nfault = "silent"\n', "events[0].meter", "no meter"),
        (EVENT + 'meter = "press"\nfault = "bad_checksum"\n', "events[0].fault", "one of"),
        (EVENT + 'meter = "office"\nfault = "bad_checksum"\nline = "board"\n', "events[0].meter", "exactly one"),
        (EVENT + 'meter = "office"\nreplace = true\nprofile = "eastron_sdm630"\n', "events[0].profile", "no profile"),
        (EVENT + 'line = "board"\nnoise = 2\n', "events[0].noise", "between"),
        (X_SDM.replace("unit = 5", "unit = 1"), "meters", "two meters with unit 1"),
        (X_METER + 'unit = 5\nprofile = "nope"\n', "meters[2].profile", "no profile 'nope'"),
        (X_SDM.replace("board", "elsewhere"), "meters[2].line", "no line"),
        (X_METER + 'dlt645 = "12"\nunit = 5\n', "meters[2].unit", "exactly one"),
        (X_METER + 'dlt645 = "99999999999A"\n', "meters[2].dlt645", "12-digit"),
        (X_SDM + 'load = [[0, 1], [0, 2]]\n', "meters[2].load[1]", "increase"),
        (X_SDM + 'load = [[0, 0]]\n', "meters[2].load[0]", "between 0.01"),
        (X_SDM + 'load = [0.5]\n', "meters[2].load[0]", "[seconds, factor]"),
        ('[[lines]]\nid = "two"\nserial = "/dev/x"\npty = "/tmp/y"\n', "lines[1].serial", "exactly one"),
        ('[[lines]]\nid = "two"\nserial = "/dev/x"\nbaudrate = 9601\n', "lines[1].baudrate", "one of"),
    ],
)  # fmt: skip
def test_mistakes_name_the_file_and_key(tmp_path: Path, extra: str, key: str, message: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ConfigError) as caught:
        load_rig(path)
    assert caught.value.path == str(path) and caught.value.key == key
    assert message in caught.value.message


def test_a_load_profile_is_joined_by_straight_lines_and_may_repeat() -> None:
    shape = LoadShape(((0.0, 1.0), (10.0, 0.5), (20.0, 0.5)))
    assert [shape.factor(t) for t in (-5, 0, 5, 10, 15, 25)] == [1.0, 1.0, 0.75, 0.5, 0.5, 0.5]
    repeating = LoadShape(((0.0, 1.0), (10.0, 0.5)), repeat=True)
    assert repeating.factor(15) == repeating.factor(5) == 0.75


def test_the_script_changes_the_floor_at_its_times(tmp_path: Path) -> None:
    text = MINIMAL + (
        "[rig]\nspeed = 100\nduration_s = 30\n"
        '[[meters]]\nid = "shaped"\nline = "board"\nunit = 2\nprofile = "eastron_sdm630"\n'
        "load = [[0, 1.0], [10, 1.0], [10.5, 0.2]]\n"
        '[[events]]\nat_s = 10\nmeter = "press"\nfault = "silent"\n'
        '[[events]]\nat_s = 20\nmeter = "office"\nreplace = true\nimport_kwh = 2\n'
        '[[events]]\nat_s = 20\nmeter = "press"\nfault = "none"\n'
        '[[events]]\nat_s = 25\nline = "board"\nnoise = 1\n'
    )
    rig = Rig(load_rig(write(tmp_path, text)))
    server = rig.servers["board"]
    office = server.dlt645_meters["000000000004"]
    shaped = server.meters[2].load
    assert shaped.shape is not None and shaped.shape(rig.meter_clock()) == 1.0
    lines: list[str] = []
    rig.run(threading.Event(), lines.append)  # 30 s of rig time at 100x: 0.3 s
    assert [line.split(":")[0] for line in lines] == ["t=10 s", "t=20 s", "t=20 s", "t=25 s"]
    assert server.meters[1].fault is None and server.noise == 1.0
    # A new meter object whose counter starts where the script says.
    assert server.dlt645_meters["000000000004"] is not office
    assert 2.0 <= server.dlt645_meters["000000000004"].values()["active_energy_import_kwh"] < 2.1
    assert office.values()["active_energy_import_kwh"] > 100
    # The load runs on the rig's clock: 30 s in, the shaped meter draws a fifth of its load.
    now = rig.meter_clock()
    shaped_w = shaped.true_power_w(now)
    shape, shaped.shape = shaped.shape, None
    assert shaped_w == pytest.approx(0.2 * shaped.true_power_w(now))
    assert shape(now) == pytest.approx(0.2)


def test_line_noise_is_caught_by_the_crc(tmp_path: Path) -> None:
    from drivers.emulation.meter import EmulatedMeter
    from drivers.modbus import ModbusBus
    from drivers.profile import load_shipped_profile
    from gateway.config import Device

    profile = load_shipped_profile("eastron_sdm630")
    with serial_pair() as line, EmulatorServer([EmulatedMeter(1, profile)]) as server:
        server.serve_serial(str(line.a))
        server.noise = 1.0
        bus = ModbusBus(SerialBus("bus", str(line.b), timeout_s=0.3))
        device = Device("m", "bus", 1, profile, 1.0, ("voltage_l1_v",))
        qualities = {bus.read(device).quality for _ in range(5)}
        bus.close()
    assert qualities <= {"invalid_response", "timeout"} and server.noisy_answers >= 5


def test_the_command_refuses_options_beside_a_rig(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "emulate", "--rig", str(path), "--meter", "1:x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "drop --meter" in result.stderr
    broken = write(tmp_path, MINIMAL + "[rig]\nspeed = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "emulate", "--rig", str(broken)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"cgw emulate: {broken}: rig.speed: must be between 0.001 and 1e+06, not -1"
    )


def test_the_command_serves_the_rig_until_its_duration(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + '[rig]\nduration_s = 1\n[[events]]\nat_s = 0.5\nmeter = "press"\nfault = "slow"\n',
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "emulate", "--rig", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"line board: {tmp_path / 'tty'} -> /dev/pts/" in result.stdout
    assert "t=0.5 s: meter press: slow" in result.stdout
    assert not (tmp_path / "tty").exists()  # the link is removed on the way out
