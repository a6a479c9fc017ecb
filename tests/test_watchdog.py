"""The sd_notify protocol for real: a notify socket as systemd makes one, a real `cgw run` told of it
through NOTIFY_SOCKET and WATCHDOG_USEC, and real hangs: a serial line whose output is suspended
and a database another process keeps locked."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from tests.support.gateway import DaemonProcess, Meter, committed_records, write_config
from tests.support.platform import wait_until
from tests.support.serial_pair import serial_pair

WATCHDOG_USEC = 2_000_000  # keep-alives every second
METERS = [Meter("incomer", 1, "eastron_sdm630"), Meter("compressor", 2, "chint_dtsu666")]


class NotifySocket:
    """What systemd listens on for a Type=notify service: a datagram socket; each datagram holds
    newline-separated assignments. Every one received is kept with its arrival time and what
    `probe` said at that moment."""

    def __init__(self, path: Path, probe: Callable[[], object] = lambda: None) -> None:
        self.path = path
        self.probe = probe
        self.received: list[tuple[float, str, object]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            seen = self.probe()
            self.received.extend((now, line, seen) for line in data.decode().splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def times(self, line: str) -> list[float]:
        return [t for t, got, _ in list(self.received) if got == line]

    def first(self, line: str) -> tuple[float, object]:
        return next((t, seen) for t, got, seen in list(self.received) if got == line)

    def statuses(self) -> list[str]:
        return [got for _, got, _ in list(self.received) if got.startswith("STATUS=")]

    def keepalives_since(self, start: float) -> int:
        return sum(1 for t in self.times("WATCHDOG=1") if t >= start)

    def quiet_for(self, seconds: float) -> bool:
        """No keep-alive for `seconds` (while they are due every WATCHDOG_USEC / 2)."""
        last = max(self.times("WATCHDOG=1"), default=0.0)
        return time.monotonic() - last >= seconds


@contextlib.contextmanager
def notify_socket(probe: Callable[[], object] = lambda: None) -> Iterator[NotifySocket]:
    with tempfile.TemporaryDirectory(prefix="cgw-notify-") as folder:  # short: sun_path limit
        listener = NotifySocket(Path(folder) / "notify", probe)
        try:
            yield listener
        finally:
            listener.close()


def stalled(listener: NotifySocket, what: str) -> bool:
    return any(s.startswith("STATUS=stalled: ") and what in s for s in listener.statuses())


def wait_ready(listener: NotifySocket, daemon: DaemonProcess, timeout_s: float = 30) -> None:
    assert daemon.process is not None
    deadline = time.monotonic() + timeout_s
    while not listener.times("READY=1"):
        assert daemon.process.poll() is None, f"daemon exited:\n{daemon.logs()}"
        assert time.monotonic() < deadline, f"no READY=1:\n{daemon.logs()}"
        time.sleep(0.05)


def test_ready_keepalives_and_stopping(
    tmp_path: Path, emulator: EmulatorServer, meters: list[EmulatedMeter]
) -> None:
    config = write_config(tmp_path, METERS, tcp_port=emulator.serve_tcp(), mqtt_port=None)
    db = tmp_path / "data" / "buffer.db"

    def probe() -> tuple[bool, int]:
        return db.exists(), min(m.requests for m in meters)

    with notify_socket(probe) as listener:
        daemon = DaemonProcess(config, env=listener.env()).start()
        wait_ready(listener, daemon)
        ready_at, seen = listener.first("READY=1")
        db_existed, polled = cast(tuple[bool, int], seen)
        assert db_existed and polled >= 1  # the buffer is open and every meter has been asked
        time.sleep(4)
        assert 3 <= listener.keepalives_since(ready_at) <= 6
        assert all(t >= ready_at for t in listener.times("WATCHDOG=1"))
        assert listener.statuses()[0].startswith("STATUS=2 devices on 1 buses, 0 pulse inputs")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        stopping_at, _ = listener.first("STOPPING=1")
    assert not [t for t in listener.times("WATCHDOG=1") if t > stopping_at]
    assert "Traceback" not in daemon.logs()


DLT645_CONFIG = """
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
id = "line"
type = "rtu"
port = "{port}"
baudrate = 9600
timeout_s = 0.3

[[devices]]
id = "dlt-meter"
bus = "line"
protocol = "dlt645"
address = "123456789012"
identifiers = ["00010000", "02010100"]
interval_s = 0.3
"""


def test_a_serial_write_that_never_returns_stops_the_keepalives(tmp_path: Path) -> None:
    """XOFF'd output (tcflow TCOOFF on the daemon's pty) makes the DL/T 645 client's write block:
    it opens the port without a write timeout. pymodbus sets one, so a Modbus poll on a stopped
    line times out instead, and that bus keeps its heartbeat, as it should."""
    with serial_pair() as line, notify_socket() as listener:
        emulate = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "emulate",
                "--serial",
                str(line.a),
                "--dlt645",
                "123456789012",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        config = tmp_path / "gateway.toml"
        config.write_text(DLT645_CONFIG.format(port=line.b))
        daemon = DaemonProcess(config, env=listener.env()).start()
        stopped = os.open(line.b, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            wait_ready(listener, daemon)
            wait_until(lambda: listener.keepalives_since(0) >= 2, 10, "keep-alives")
            termios.tcflow(stopped, termios.TCOOFF)
            suspended = time.monotonic()
            wait_until(lambda: stalled(listener, "bus line: stuck for"), 15, "a stall")
            wait_until(lambda: listener.quiet_for(3), 5, "the keep-alives to stop")
            # within the bus's limit (its floor, 5 s, here), a poll interval and a check
            assert max(listener.times("WATCHDOG=1")) - suspended < 5 + 2
            assert daemon.process is not None and daemon.process.poll() is None
            termios.tcflow(stopped, termios.TCOON)
            resumed = time.monotonic()
            wait_until(lambda: listener.keepalives_since(resumed) >= 2, 10, "keep-alives again")
            assert daemon.stop() == 0
        finally:
            os.close(stopped)
            emulate.terminate()
            emulate.wait(10)
    logs = daemon.logs()
    assert "bus line makes no progress" in logs and "bus line makes progress again" in logs
    assert "Traceback" not in logs


def test_a_locked_database_stops_the_keepalives_and_loses_no_reading(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    config = write_config(tmp_path, METERS, tcp_port=emulator.serve_tcp(), mqtt_port=None)
    db = tmp_path / "data" / "buffer.db"
    with notify_socket() as listener:
        daemon = DaemonProcess(config, env=listener.env()).start()
        wait_ready(listener, daemon)
        wait_until(lambda: listener.keepalives_since(0) >= 2, 10, "keep-alives")
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            locked = time.monotonic()
            # The next commit waits out busy_timeout (5 s), then fails, again every 2 s.
            wait_until(lambda: stalled(listener, "buffer: cannot write buffer.db"), 15, "a stall")
            wait_until(lambda: listener.quiet_for(3), 5, "the keep-alives to stop")
            assert max(listener.times("WATCHDOG=1")) - locked < 2  # at once: that commit blocks
            assert daemon.process is not None and daemon.process.poll() is None
            held = len(committed_records(db))
            other.execute("ROLLBACK")
        released = time.monotonic()
        wait_until(lambda: listener.keepalives_since(released) >= 2, 15, "keep-alives again")
        wait_until(lambda: len(committed_records(db)) > held + 10, 10, "commits again")
        assert daemon.stop() == 0
    logs = daemon.logs()
    assert logs.count("readings wait in memory") == 1  # logged once a minute, not per attempt
    assert "buffer makes progress again" in logs and "Traceback" not in logs
    # Every poll's reading is in the buffer once: those taken while it was locked too.
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["running"] is False  # written after the last commit
    records = committed_records(db)
    for meter in METERS:
        stamps = [r["ts"] for r in records if r["device"] == meter.id]
        assert len(stamps) == len(set(stamps)) == status["devices"][meter.id]["polls"]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) < 1500, "readings missing while the database was locked"


@pytest.mark.parametrize("under_systemd", [False, True])
def test_without_notify_socket_nothing_is_sent(under_systemd: bool) -> None:
    from gateway.watchdog import Notifier, keepalive_interval_s

    env = {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "30000000"}
    notifier = Notifier(env if under_systemd else {})
    assert notifier.enabled is under_systemd
    assert notifier.keepalive_s == (15.0 if under_systemd else None)
    notifier.send("READY=1")  # an unreachable socket is logged, never raised
    assert keepalive_interval_s({**env, "WATCHDOG_PID": str(os.getpid() + 1)}) is None


class Thread:
    def __init__(self, heartbeat: float) -> None:
        self.heartbeat = heartbeat


def test_liveness_allows_each_thread_its_own_schedule() -> None:
    from gateway.watchdog import Liveness

    liveness = Liveness(now=100.0)
    asleep, slow, stuck = Thread(160.0), Thread(95.0), Thread(90.0)
    liveness.watch("bus asleep", asleep)  # waits until its next device is due, at 160
    liveness.watch("bus slow", slow, longest_step_s=4.0)  # 14 dead meters' timeouts: 12 s allowed
    liveness.watch("bus stuck", stuck)
    assert liveness.problems(101.0) == {"bus stuck": "stuck for 11 s"}
    stuck.heartbeat = 101.0
    liveness.buffer_failed("cannot write buffer.db: database is locked")
    assert liveness.problems(102.0) == {"buffer": "cannot write buffer.db: database is locked"}
    liveness.buffer_progressed(102.0)
    assert liveness.problems(103.0) == {}
    assert set(liveness.problems(108.0)) == {"bus slow", "bus stuck", "buffer"}
