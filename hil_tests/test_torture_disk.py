"""Disk full during a broker outage: ten meters polled every 0.1 s into a buffer on a small
filesystem (tmpfs, 8 MB) with a 1 MB quota while the broker is down; then another program fills
the disk to the last byte; then space returns and the broker comes back.

The documented drop policy must hold: over the quota the oldest undelivered envelopes go first;
on a full disk polling goes on and what cannot be stored is counted. Every poll is accounted for
exactly: delivered + dropped (counted) + still buffered = polled. No corruption; recovery."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from buffer.store import Buffer, Stats
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from gateway.localbroker import LocalBroker
from hil_tests.conftest import size
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import Subscriber, wait_until
from tests.test_disk import fill, polls, small_disk

METERS = [Meter(f"m{unit}", unit) for unit in range(1, 11)]
__all__ = ["small_disk"]  # the fixture, from tests/test_disk.py


def test_a_full_disk_during_an_outage_is_accounted_for_exactly(
    tmp_path: Path, small_disk: Path, broker: LocalBroker, record: Callable[..., None]
) -> None:
    outage_s = size(8, 60)
    profile = load_shipped_profile("eastron_sdm630")
    meters = EmulatorServer([EmulatedMeter(m.unit, profile) for m in METERS])
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=meters.serve_tcp(),
        mqtt_port=broker.port,
        interval_s=0.1,
        buffer_extra="quota_mb = 1\nprune_interval_s = 1\ndelivered_retention_h = 0",
    )
    config.write_text(config.read_text().replace('data_dir = "data"', f'data_dir = "{small_disk}"'))
    db = small_disk / "buffer.db"
    started = time.monotonic()
    try:
        with Subscriber(broker.port) as platform:
            daemon = DaemonProcess(config).start().wait_running()
            wait_until(lambda: len(platform.seqs()) >= 5, 20, "delivery before the outage")
            broker.stop()
            outage_from = max(platform.seqs())
            wait_until(lambda: stats(db).dropped_records > 0, 60, "the quota to be exceeded")
            time.sleep(outage_s)
            filler = small_disk / "filler"
            fill(filler)
            wait_until(lambda: "disk full" in daemon.logs(), 30, "the full disk to be noticed")
            before = polls(config)
            wait_until(lambda: polls(config) > before + 50, 30, "polling to go on")
            filler.unlink()
            wait_until(lambda: (small_disk / "buffer.db.reserve").exists(), 30, "space again")
            broker.start()
            wait_until(lambda: stats(db).backlog_envelopes == 0, 120, "the backlog to drain")
            assert daemon.stop() == 0
            final = stats(db)
            last_seq = final.last_seq
            wait_until(
                lambda: max(platform.seqs()) == last_seq, 30, "the last envelope at the platform"
            )
            time.sleep(1.0)
            bodies = platform.envelopes()
    finally:
        meters.stop()
    delivered = {(r["device"], r["ts"]) for body in bodies for r in json.loads(body)["records"]}
    polled = polls(config)
    # Every poll: delivered, or dropped and counted, or still in the buffer. Exactly.
    buffered = final.backlog_records + final.pending_records
    assert polled == len(delivered) + final.dropped_records + buffered
    # Over the quota the oldest undelivered went first: every seq missing at the platform is
    # older than every seq sealed later in the outage that did arrive.
    seqs = {json.loads(b)["seq"] for b in bodies}
    missing = set(range(1, last_seq + 1)) - seqs
    assert missing and final.dropped_envelopes == len(missing)
    arrived_in_outage = sorted(s for s in seqs if s > outage_from)
    assert max(missing) < arrived_in_outage[-1]
    assert all(s in seqs for s in range(max(missing) + 1, last_seq + 1))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    logs = daemon.logs()
    assert "Traceback" not in logs and logs.count("disk full:") <= 2
    record(
        "torture_disk_full",
        outage_s=round(time.monotonic() - started),
        polled=polled,
        delivered=len(delivered),
        dropped_records=final.dropped_records,
        dropped_envelopes=final.dropped_envelopes,
        failed_commits=final.failed_commits,
        still_buffered=buffered,
    )


def stats(db: Path) -> Stats:
    buffer = Buffer(db, gateway="gw-test", site="lab", read_only=True)
    try:
        return buffer.stats()
    finally:
        buffer.close()
