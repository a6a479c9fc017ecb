"""The processes around a benchmarked daemon: emulated meters, `cgw run` itself, and /proc."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import Children, python
from gateway.localbroker import free_port

PROFILE = "eastron_sdm630"


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def proc_io(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/io").read_text(encoding="ascii")
    except OSError:
        return {}
    return {k: int(v) for k, _, v in (line.partition(": ") for line in text.splitlines())}


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_line(process: subprocess.Popen[bytes], startswith: str, timeout_s: float) -> str:
    """Read the child's stdout (unbuffered: select must see what is unread) until a line that
    starts so; TimeoutError or RuntimeError if none comes."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline().decode(errors="replace")
            if not line:
                raise RuntimeError(f"{process.args!r} exited (status {process.wait()})")
            if line.startswith(startswith):
                return line
    raise TimeoutError(f"{process.args!r} printed no {startswith!r} in {timeout_s:.0f} s")


def start_emulators(children: Children, meters: int, buses: int, folder: Path) -> list[int]:
    """`buses` emulator processes on their own TCP ports sharing `meters` meters; their ports."""
    ports = []
    for bus in range(buses):
        units = range(1, meters // buses + (1 if bus < meters % buses else 0) + 1)
        port = free_port()
        command = [python(), "-m", "gateway.cli", "emulate", "--tcp", f"127.0.0.1:{port}"]
        command += [arg for unit in units for arg in ("--meter", f"{unit}:{PROFILE}")]
        command += ["--seed", str(bus)]
        with (folder / f"emulator{bus}.log").open("ab") as log:
            process = children.start(command, stdout=subprocess.PIPE, stderr=log, bufsize=0)
        wait_line(process, "press Ctrl-C", 30)
        ports.append(port)
    return ports


def write_config(
    folder: Path, ports: list[int], meters: int, mqtt_port: int, interval_s: float
) -> Path:
    lines = [
        "[gateway]",
        'id = "gw-bench"',
        'site = "bench"',
        'data_dir = "data"',
        'runtime_dir = "run"',
        'clock = "trusted"',  # this machine's kernel may never call its clock synchronised
        "",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {mqtt_port}",
        "",
    ]
    for bus, port in enumerate(ports):
        lines += [
            "[[buses]]",
            f'id = "bus{bus}"',
            'type = "tcp"',
            'host = "127.0.0.1"',
            f"port = {port}",
            "",
        ]
    for index in range(meters):
        bus = index % len(ports)
        unit = index // len(ports) + 1
        lines += [
            "[[devices]]",
            f'id = "meter-{index + 1:02d}"',
            f'bus = "bus{bus}"',
            f"unit = {unit}",
            f'profile = "{PROFILE}"',
            f"interval_s = {interval_s}",
            "",
        ]
    # Accounting as a site would run it: every meter's energy, and a power limit on each.
    lines += ["[accounting]", ""]
    for index in range(meters):
        meter = f"meter-{index + 1:02d}"
        lines += ["[[accounting.meters]]", f'device = "{meter}"', 'role = "load"', ""]
        lines += ["[[accounting.limits]]", f'device = "{meter}"', 'quantity = "active_power_w"']
        lines += ["above = 250000", "hysteresis = 5000", "for_s = 300", ""]
    path = folder / "gateway.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def wait_running(process: subprocess.Popen[bytes], status_file: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {process.returncode}")
        try:
            if json.loads(status_file.read_text(encoding="utf-8"))["pid"] == process.pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the daemon wrote no {status_file} within {timeout_s:.0f} s")


def start_daemon(children: Children, folder: Path, config: Path) -> subprocess.Popen[bytes]:
    with (folder / "daemon.log").open("ab") as log:
        daemon = children.start(
            [python(), "-m", "gateway.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=log,
            cwd=folder,
        )
    wait_running(daemon, folder / "run" / "status.json", 60)
    return daemon


def read_status(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))
