"""Run the real daemon (`cgw run`) as a process against a config written for the test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buffer.store import Buffer


@dataclass(frozen=True)
class Meter:
    id: str
    unit: int
    profile: str = "eastron_sdm630"


def write_config(
    folder: Path,
    meters: list[Meter],
    *,
    tcp_port: int | None = None,
    serial_port: str | None = None,
    mqtt_port: int | None,
    interval_s: float = 0.2,
    seal_interval_s: float = 0.3,
    mqtt_extra: str = "",
    buffer_extra: str = "",
    envelope_max_records: int = 50,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if serial_port is not None:
        bus = f'[[buses]]\nid = "bus"\ntype = "rtu"\nport = "{serial_port}"\nbaudrate = 19200\ntimeout_s = 0.3\n'
    else:
        bus = f'[[buses]]\nid = "bus"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {tcp_port}\ntimeout_s = 0.3\n'
    mqtt = (
        "[mqtt]\nenabled = false\n"
        if mqtt_port is None
        else f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nreconnect_min_s = 0.2\nreconnect_max_s = 1\n'
        f"status_interval_s = 1\n{mqtt_extra}\n"
    )
    devices = "".join(
        f'[[devices]]\nid = "{m.id}"\nbus = "bus"\nunit = {m.unit}\nprofile = "{m.profile}"\n'
        f"interval_s = {interval_s}\n"
        for m in meters
    )
    text = (
        f'[gateway]\nid = "gw-test"\nsite = "lab"\ndata_dir = "data"\nruntime_dir = "run"\n\n'
        f"[buffer]\ncommit_interval_s = 0.2\nseal_interval_s = {seal_interval_s}\n"
        f"envelope_max_records = {envelope_max_records}\n{buffer_extra}\n\n"
        f"{mqtt}\n{bus}\n{devices}"
    )
    path = folder / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


STARTED: list[subprocess.Popen[bytes]] = []  # every daemon a test started: killed after the test


class DaemonProcess:
    def __init__(self, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = env  # variables added to the test's environment
        self.log = config.parent / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def command(config: Path, name: str = "run") -> list[str]:
        return [sys.executable, "-m", "gateway.cli", name, "--config", str(config)]

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(self.config),
                stdout=log,
                stderr=log,
                env=None if self.env is None else {**os.environ, **self.env},
            )
        STARTED.append(self.process)
        return self

    def wait_running(self, timeout_s: float = 30) -> DaemonProcess:
        """Until the daemon has written its first status file (it is past start-up)."""
        status = self.config.parent / "run" / "status.json"
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"daemon exited early:\n{self.logs()}"
            try:
                if json.loads(status.read_text())["pid"] == self.process.pid:
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon did not start within {timeout_s} s:\n{self.logs()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        return self.wait(20)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def buffer(self) -> Buffer:
        return Buffer(
            self.config.parent / "data" / "buffer.db", gateway="gw-test", site="lab", read_only=True
        )


def write_pulse_config(
    folder: Path,
    *,
    rate_hz: float,
    pulses_per_unit: float = 1000,
    interval_s: float = 0.2,
    absent_chip: Path | None = None,
) -> Path:
    """A gateway with no buses: one emulated pulse input `s0` at `rate_hz` (kWh), and, given
    `absent_chip`, a GPIO input `s0-gpio` on a chip that does not exist."""
    folder.mkdir(parents=True, exist_ok=True)
    gpio = (
        ""
        if absent_chip is None
        else f'[[pulse_inputs]]\nid = "s0-gpio"\nchip = "{absent_chip}"\nline = 4\n'
        f'quantity = "water_volume_m3"\npulses_per_unit = 100\ninterval_s = {interval_s}\n'
    )
    text = (
        f'[gateway]\nid = "gw-test"\nsite = "lab"\ndata_dir = "data"\nruntime_dir = "run"\n\n'
        f"[buffer]\ncommit_interval_s = 0.2\nseal_interval_s = 0.3\n\n"
        f"[mqtt]\nenabled = false\n\n"
        f'[[pulse_inputs]]\nid = "s0"\nsource = "emulated"\nemulated_rate_hz = {rate_hz}\n'
        f'quantity = "active_energy_import_kwh"\npulses_per_unit = {pulses_per_unit}\n'
        f"max_rate_hz = {rate_hz * 2}\ndebounce_ms = 5\ninterval_s = {interval_s}\n\n{gpio}"
    )
    path = folder / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def committed_records(db: Path) -> list[dict[str, Any]]:
    """Every record committed in the buffer, in commit order: sealed ones, then pending ones."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        sealed = [
            r
            for (body,) in conn.execute("SELECT body FROM bodies ORDER BY seq")
            for r in json.loads(body)["records"]
        ]
        pending = [json.loads(r) for (r,) in conn.execute("SELECT record FROM pending ORDER BY id")]
    return sealed + pending
