"""Bounded disk: past the quota the oldest undelivered data goes (counted); on a full disk polling
goes on and what cannot be stored is counted. Neither stops the daemon or corrupts the buffer."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from buffer.store import Buffer
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import wait_until

METERS = [Meter(f"m{unit}", unit) for unit in range(1, 11)]


@pytest.fixture
def ten_meters() -> Iterator[EmulatorServer]:
    profile = load_shipped_profile("eastron_sdm630")
    server = EmulatorServer([EmulatedMeter(m.unit, profile) for m in METERS])
    yield server
    server.stop()


def polls(config: Path) -> int:
    status = json.loads((config.parent / "run" / "status.json").read_text())
    return sum(d["polls"] for d in status["devices"].values())


def test_quota_drops_the_oldest_undelivered_and_reports_it(
    tmp_path: Path, ten_meters: EmulatorServer
) -> None:
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=ten_meters.serve_tcp(),
        mqtt_port=None,
        interval_s=0.1,
        buffer_extra="quota_mb = 0.2\nprune_interval_s = 1",
    )
    daemon = DaemonProcess(config).start().wait_running()
    wait_until(lambda: daemon.buffer().stats().dropped_records > 0, 60, "the quota to be exceeded")
    before = polls(config)
    wait_until(lambda: polls(config) > before + 20, 20, "polling to go on")
    assert daemon.stop() == 0
    buffer = daemon.buffer()
    stats = buffer.stats()
    assert stats.used_bytes <= stats.quota_bytes * 1.1
    first = buffer.undelivered(0, None, 1)[0].seq
    assert first > 1 and stats.dropped_envelopes >= first - 1  # the oldest went first
    assert "buffer over its quota" in daemon.logs() and "Traceback" not in daemon.logs()
    text = subprocess.run(
        [*DaemonProcess.command(config, "status")], capture_output=True, text=True, timeout=30
    ).stdout
    assert f"DROPPED {stats.dropped_records} readings" in text


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> None:
    """Another program fills the disk to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


def test_a_full_disk_does_not_stop_polling_and_recovers(
    tmp_path: Path, small_disk: Path, ten_meters: EmulatorServer
) -> None:
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=ten_meters.serve_tcp(),
        mqtt_port=None,
        interval_s=0.1,
        buffer_extra="quota_mb = 100\nprune_interval_s = 1",
    )
    config.write_text(config.read_text().replace('data_dir = "data"', f'data_dir = "{small_disk}"'))
    daemon = DaemonProcess(config).start().wait_running()
    buffer_db = small_disk / "buffer.db"
    wait_until(lambda: (small_disk / "buffer.db.reserve").exists(), 20, "the space reserve")
    wait_until(lambda: committed(buffer_db) > 100, 30, "readings in the buffer")
    filler = small_disk / "filler"
    fill(filler)

    status = config.parent / "run" / "status.json"
    wait_until(lambda: "disk full" in daemon.logs(), 30, "the daemon to notice the full disk")
    before = polls(config)
    wait_until(lambda: polls(config) > before + 50, 30, "polling to go on")
    assert daemon.process is not None and daemon.process.poll() is None

    filler.unlink()  # space returns
    wait_until(lambda: (small_disk / "buffer.db.reserve").exists(), 30, "the reserve to come back")
    after = committed(buffer_db)
    wait_until(lambda: committed(buffer_db) > after + 50, 30, "readings to be stored again")
    assert daemon.stop() == 0
    stats = Buffer(buffer_db, gateway="gw-test", site="lab", read_only=True).stats()
    assert stats.dropped_records > 0  # counted, and the count reached the disk once it could
    with sqlite3.connect(buffer_db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    logs = daemon.logs()
    assert logs.count("disk full:") <= 2 and "Traceback" not in logs
    assert json.loads(status.read_text())["running"] is False


def committed(db: Path) -> int:
    """Readings in the buffer; -1 while the full disk keeps even a reader out."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            pending = conn.execute("SELECT count(*) FROM pending").fetchone()[0]
            sealed = conn.execute("SELECT coalesce(sum(records), 0) FROM envelopes").fetchone()[0]
    except sqlite3.OperationalError:
        return -1
    return int(pending + sealed)
