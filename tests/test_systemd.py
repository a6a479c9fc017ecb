"""The service unit (systemd/cgw.service) and logging to journald.

`systemd-analyze verify` checks that the unit's ExecStart binary exists; on a development machine
/opt/cgw/venv is not installed, so the unit is verified in a root tree (`--root`) holding systemd's
own units, the unit and an executable stub at /opt/cgw/venv/bin/cgw.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.emulation.server import EmulatorServer
from gateway import journal
from tests.support.gateway import STARTED, DaemonProcess, Meter, write_config
from tests.support.platform import wait_until

UNIT = Path(__file__).parent.parent / "systemd" / "cgw.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
MAX_EXPOSURE = 2.0


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze not found: install the Debian package systemd (./dev test does)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/cgw.service")
    stub = root / "opt/cgw/venv/bin/cgw"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    result = analyze("verify", f"--root={root}", "cgw.service")
    # Unknown keys and bad values are only warnings: any output fails the test.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_unit_is_rated_2_0_or_better_by_systemd_analyze_security() -> None:
    result = analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for cgw\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout
    assert float(found[1]) <= MAX_EXPOSURE, result.stdout
    # The one system call of @clock cgw needs: adjtimex, to read whether NTP synchronised.
    assert "adjtimex is allowed" in result.stdout


def test_the_unit_runs_cgw_as_the_image_installs_it() -> None:
    settings = [line.strip() for line in UNIT.read_text().splitlines()]
    for expected in (
        "ExecStart=/opt/cgw/venv/bin/cgw run --config /etc/cgw/gateway.toml",
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=cgw",
        "StateDirectory=cgw",
        "RuntimeDirectory=cgw",
        "ProtectSystem=strict",
    ):
        assert expected in settings


# -- MemoryDenyWriteExecute=yes ---------------------------------------------------------------

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def deny_write_execute() -> None:
    """In the child before exec: the kernel's own W^X (Linux 6.3+), what MemoryDenyWriteExecute=
    enforces with a seccomp filter; it holds across execve."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def test_the_daemon_runs_without_writable_executable_memory(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """Python's ctypes (cgw reads the clock's sync state through it), cryptography's Ed25519 and
    the rest of the daemon work when no memory may be writable and executable."""
    config = write_config(
        tmp_path, [Meter("incomer", 1)], tcp_port=emulator.serve_tcp(), mqtt_port=None
    )
    daemon = DaemonProcess(config)
    try:
        with daemon.log.open("ab") as stderr:
            daemon.process = subprocess.Popen(
                daemon.command(config),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=deny_write_execute,
            )
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
        raise
    STARTED.append(daemon.process)
    daemon.wait_running()
    wait_until(lambda: daemon.buffer().last_seq >= 2, 30, "signed envelopes")  # Ed25519 signing
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.logs()


# -- journald -----------------------------------------------------------------------------


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as stderr, (tmp_path / "other").open("w") as other:
        st = os.fstat(stderr.fileno())
        stream = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal.stderr_is_journal(stream, stderr)
        assert not journal.stderr_is_journal(stream, other)  # StandardError=file:... or a shell
        assert not journal.stderr_is_journal({"INVOCATION_ID": "x"}, stderr)
        assert not journal.stderr_is_journal({"JOURNAL_STREAM": "junk"}, stderr)


def parse_native(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: KEY=value lines, or KEY, a 64-bit little-endian size and the
    bytes (for values with newlines)."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            at = end + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", datagram, end + 1)
            value = datagram[end + 9 : end + 9 + size]
            at = end + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


class FakeJournald:
    """journald's socket, bound by the test (as root, where no journald runs)."""

    def __init__(self) -> None:
        self.created_dir = not JOURNAL_SOCKET.parent.exists()
        JOURNAL_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(JOURNAL_SOCKET))
        self.sock.settimeout(0.2)

    def entries(self, timeout_s: float) -> Iterator[dict[str, str]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                yield parse_native(self.sock.recv(1 << 20))

    def close(self) -> None:
        self.sock.close()
        JOURNAL_SOCKET.unlink()
        if self.created_dir:
            JOURNAL_SOCKET.parent.rmdir()


def journald_listens() -> bool:
    """A live journald (or another test's fake) answers; a socket file left behind does not."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(JOURNAL_SOCKET))
        except ConnectionRefusedError:
            JOURNAL_SOCKET.unlink()
            return False
        except FileNotFoundError:
            return False
    return True


@pytest.fixture
def journald() -> Iterator[FakeJournald]:
    if os.geteuid() != 0 or journald_listens():
        pytest.skip("needs root and no journald running (binds its socket)")
    fake = FakeJournald()
    try:
        yield fake
    finally:
        fake.close()


def test_log_records_reach_journald_with_their_fields(journald: FakeJournald) -> None:
    log = logging.getLogger("cgw.test-journal")
    log.propagate = False
    log.addHandler(journal.journal_handler())
    try:
        log.warning(
            "device %s on bus %s: timeout", "m1", "rs485", extra={"device": "m1", "bus": "rs485"}
        )
        log.error("envelope\nrejected", extra={"seq": 42})
    finally:
        log.handlers.clear()
    first, second = itertools.islice(journald.entries(5.0), 2)
    assert first["MESSAGE"] == "device m1 on bus rs485: timeout"
    assert (first["SYSLOG_IDENTIFIER"], first["PRIORITY"], first["LOGGER"]) == (
        "cgw",
        "4",
        "cgw.test-journal",
    )
    assert (first["DEVICE"], first["BUS"]) == ("m1", "rs485") and "SEQ" not in first
    assert (second["MESSAGE"], second["SEQ"], second["PRIORITY"]) == (
        "envelope\nrejected",
        "42",
        "3",
    )
    assert not [k for k in first if not re.fullmatch(r"[A-Z0-9_]+", k)]


def test_the_daemon_logs_to_journald_under_systemd(
    tmp_path: Path, emulator: EmulatorServer, journald: FakeJournald
) -> None:
    """Started as systemd starts it: stderr connected to the journal, named by JOURNAL_STREAM."""
    config = write_config(
        tmp_path,
        [Meter("incomer", 1), Meter("silent", 9)],
        tcp_port=emulator.serve_tcp(),
        mqtt_port=None,
    )
    log_file = tmp_path / "daemon.log"
    log_file.touch()
    st = log_file.stat()
    daemon = DaemonProcess(config, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}).start()
    entries = []
    for entry in journald.entries(10.0):
        entries.append(entry)
        if entry.get("DEVICE") == "silent":
            break
    assert daemon.stop() == 0
    silent = [e for e in entries if e.get("DEVICE") == "silent"]
    assert silent, entries
    assert silent[0]["BUS"] == "bus" and silent[0]["SYSLOG_IDENTIFIER"] == "cgw"
    assert silent[0]["MESSAGE"].startswith("device silent on bus bus: timeout")
    assert any(e["MESSAGE"].startswith("running: gateway gw-test") for e in entries)
    assert daemon.logs() == ""  # nothing on stderr: it all went to the journal
