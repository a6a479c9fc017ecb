"""A Modbus meter and a DL/T 645 meter on one serial line, through the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load
from tests.support.gateway import DaemonProcess
from tests.support.platform import wait_until
from tests.support.serial_pair import serial_pair

CONFIG = """
[gateway]
id = "gw-test"
site = "lab"
data_dir = "data"
runtime_dir = "run"

[buffer]
commit_interval_s = 0.2
seal_interval_s = 0.3

[mqtt]
enabled = false

[[buses]]
id = "bus"
type = "rtu"
port = "{port}"
baudrate = 9600
# Generous: a loaded CI machine may answer late; this test is about sharing the line.
timeout_s = 1.0

[[devices]]
id = "incomer"
bus = "bus"
unit = 1
profile = "eastron_sdm630"
interval_s = 0.3

[[devices]]
id = "dlt-meter"
bus = "bus"
protocol = "dlt645"
address = "123456789012"
interval_s = 0.3
"""


def test_modbus_and_dlt645_share_a_line(tmp_path: Path) -> None:
    with serial_pair() as line:
        emulate = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "emulate",
                "--serial",
                str(line.a),
                "--meter",
                "1:eastron_sdm630",
                "--dlt645",
                "123456789012",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            config = tmp_path / "gateway.toml"
            config.write_text(CONFIG.format(port=line.b))
            daemon = DaemonProcess(config).start().wait_running()
            wait_until(lambda: daemon.buffer().last_seq >= 4, 30, "sealed envelopes")
            assert daemon.stop() == 0
        finally:
            emulate.terminate()
            emulate.communicate(timeout=10)
    records = [r for b in daemon.buffer().envelopes() for r in json.loads(b)["records"]]
    by_device = {d: [r for r in records if r["device"] == d] for d in ("incomer", "dlt-meter")}
    for device, rows in by_device.items():
        assert len(rows) >= 5, device
        assert all(r["quality"] == "ok" for r in rows), rows[-1]
        assert 200 < rows[-1]["values"]["voltage_l1_v"] < 260
    assert by_device["dlt-meter"][-1]["values"]["active_energy_import_kwh"] > 0
    assert "Traceback" not in daemon.logs()


@pytest.mark.parametrize(
    ("device", "key", "message"),
    [
        ('protocol = "dlt645"\naddress = "12345"', "devices[0].address", "12 decimal digits"),
        (
            'protocol = "dlt645"\naddress = "123456789012"\nidentifiers = ["99999999"]',
            "devices[0].identifiers[0]",
            "no DL/T 645 identifier",
        ),
        (
            'protocol = "dlt645"\nbus = "lan"\naddress = "123456789012"',
            "devices[0].protocol",
            "serial bus",
        ),
    ],
)
def test_dlt645_config_mistakes_name_the_key(
    tmp_path: Path, device: str, key: str, message: str
) -> None:
    text = (
        '[gateway]\nid = "g"\nsite = "s"\n[[buses]]\nid = "bus"\ntype = "rtu"\nport = "/dev/ttyUSB0"\n'
        '[[buses]]\nid = "lan"\ntype = "tcp"\nhost = "10.0.0.1"\n'
        f'[[devices]]\nid = "d"\n{device}\n'
    )
    if 'bus = "lan"' not in device:
        text += 'bus = "bus"\n'
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key and message in caught.value.message
