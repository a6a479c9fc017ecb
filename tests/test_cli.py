"""The `cgw` command as people use it: help, demo, emulate + run over a serial line, status, verify."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import wait_until
from tests.support.serial_pair import serial_pair

COMMANDS = [
    "run",
    "demo",
    "emulate",
    "status",
    "verify",
    "profiles",
    "plan",
    "read",
    "scan",
    "check",
]


def cgw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None) -> None:
    result = cgw(*([command] if command else []), "--help")
    assert result.returncode == 0 and "usage: cgw" in result.stdout
    if command is None:
        assert all(c in result.stdout for c in COMMANDS)


def test_demo_runs_the_whole_path_and_verifies(tmp_path: Path) -> None:
    result = cgw("demo", "--data-dir", str(tmp_path), "--duration", "12", timeout=90)
    assert result.returncode == 0, result.stderr
    assert "platform received" in result.stdout
    summary = re.search(r"platform verified (\d+) of (\d+) envelopes", result.stdout)
    assert summary is not None
    assert int(summary[1]) == int(summary[2]) >= 1
    for device in ("main-incomer", "compressor-1", "pv-inverter-ac"):
        assert device in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_without_broker_says_the_uplink_is_offline(tmp_path: Path) -> None:
    result = cgw("demo", "--no-broker", "--data-dir", str(tmp_path), "--duration", "6", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "uplink OFFLINE" in result.stdout and "readings buffered locally" in result.stdout
    assert (tmp_path / "buffer.db").exists()


def test_emulated_meters_over_a_serial_line_status_and_verify(tmp_path: Path) -> None:
    with serial_pair() as line:
        emulate = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "emulate",
                "--serial",
                str(line.a),
                "--baudrate",
                "19200",
                "--meter",
                "1:eastron_sdm630",
                "--meter",
                "7:chint_dtsu666",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            meters = [
                Meter("incomer", 1, "eastron_sdm630"),
                Meter("feeder", 7, "chint_dtsu666"),
                Meter("absent", 9),
            ]
            config = write_config(tmp_path, meters, serial_port=str(line.b), mqtt_port=None)
            daemon = DaemonProcess(config).start().wait_running()
            wait_until(lambda: daemon.buffer().last_seq >= 3, 30, "sealed envelopes")
            status_file = tmp_path / "run" / "status.json"
            wait_until(
                lambda: all(
                    d["polls"] for d in json.loads(status_file.read_text())["devices"].values()
                ),
                30,
                "every device polled",
            )
            status = cgw("status", "--json", "--config", str(config))
            text = cgw("status", "--config", str(config))
            assert daemon.stop() == 0
        finally:
            emulate.terminate()
            out, _ = emulate.communicate(timeout=10)
    assert emulate.returncode == 0 and "serving unit 1" in out
    report = json.loads(status.stdout)
    devices = report["daemon"]["devices"]
    assert devices["incomer"]["last_quality"] == "ok" and devices["feeder"]["last_quality"] == "ok"
    assert devices["absent"]["last_quality"] == "timeout"
    assert report["daemon"]["uplink"] is None
    assert "uplink: disabled" in text.stdout and "absent" in text.stdout

    verify = cgw("verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "completeness 100.00%" in verify.stdout

    # a capture of the published stream, one envelope per line, minus one envelope: a gap
    db = tmp_path / "data" / "buffer.db"
    with sqlite3.connect(db) as conn:
        bodies = [bytes(b) for (b,) in conn.execute("SELECT body FROM bodies ORDER BY seq")]
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"\n".join(bodies[:1] + bodies[2:]) + b"\n")
    public = tmp_path / "data" / "signing.pub"
    gap = cgw("verify", "--capture", str(capture), "--public-key", str(public), "--json")
    assert gap.returncode == 3
    assert json.loads(gap.stdout)["gateways"]["gw-test"]["missing"] == [[2, 2]]

    # tampering with the database: a changed value no longer verifies
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE bodies SET body = CAST(replace(CAST(body AS TEXT), ?, ?) AS BLOB) WHERE seq = 2",
            ('"quality":"ok"', '"quality": "ok"'),
        )
    tampered = cgw("verify", "--config", str(config))
    assert tampered.returncode == 1 and "NOT_CANONICAL" in tampered.stdout
    assert "Traceback" not in tampered.stderr + daemon.logs()


def test_verify_without_keys_for_a_capture_is_a_clear_usage_error(tmp_path: Path) -> None:
    capture = tmp_path / "c.jsonl"
    capture.write_text("{}\n")
    result = cgw("verify", "--capture", str(capture))
    assert (
        result.returncode == 2
        and "--public-key" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_status_before_the_first_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Meter("m", 1)], tcp_port=502, mqtt_port=None)
    result = cgw("status", "--config", str(config))
    assert result.returncode == 0
    assert "signing key: none yet" in result.stdout and "daemon: not running" in result.stdout
