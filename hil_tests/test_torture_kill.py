"""SIGKILL torture: the daemon killed at random moments while it polls, seals, publishes and prunes
(every second, delivered data kept for no time at all), against a real Mosquitto and a platform
that records everything. 10 kills in the short run, 100 in the long one.

Then: every reading ever committed was delivered, no seq is missing, the chain verifies with the
gateway's key, identical copies only (at-least-once), and SQLite's integrity_check is ok."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from drivers.emulation.server import EmulatorServer
from gateway.localbroker import LocalBroker
from hil_tests.conftest import size
from hil_tests.records import verified
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import Subscriber, wait_until
from tests.test_gateway_e2e import committed_readings

METERS = [Meter("incomer", 1), Meter("compressor", 2, "chint_dtsu666")]


def test_sigkills_at_random_moments_lose_nothing(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer, record: Callable[..., None]
) -> None:
    kills = size(10, 100)
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=emulator.serve_tcp(),
        mqtt_port=broker.port,
        interval_s=0.1,
        seal_interval_s=0.2,
        buffer_extra="delivered_retention_h = 0\nprune_interval_s = 1",
    )
    db = tmp_path / "data" / "buffer.db"
    rng = random.Random(100)
    produced: set[tuple[str, int]] = set()
    started = time.monotonic()
    with Subscriber(broker.port) as platform:
        for _ in range(kills):
            daemon = DaemonProcess(config).start()
            time.sleep(rng.uniform(0.5, 3.0))
            daemon.kill()
            in_buffer = committed_readings(db)
            delivered = received_readings(platform.envelopes())
            # What was committed is still in the buffer, or was delivered and then pruned.
            assert produced <= in_buffer | delivered, "a committed reading vanished"
            produced |= in_buffer
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(lambda: daemon.buffer().stats().backlog_envelopes == 0, 120, "the drain")
        assert daemon.stop() == 0
        produced |= committed_readings(db)
        last_seq = daemon.buffer().last_seq
        wait_until(lambda: platform.seqs() >= set(range(1, last_seq + 1)), 30, "every seq")
    bodies = platform.envelopes()
    gateway = verified(tmp_path / "data", bodies)
    assert gateway.missing == []  # chain intact, no gap
    assert (gateway.first_seq, gateway.last_seq) == (1, last_seq)
    delivered = received_readings(bodies)
    assert produced <= delivered and len(delivered) >= 5 * kills
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        pruned = conn.execute("SELECT count(*) FROM envelopes").fetchone()[0] < last_seq
    record(
        "torture_sigkill",
        kills=kills,
        readings_produced=len(produced),
        readings_delivered=len(delivered),
        envelopes=last_seq,
        copies_received=gateway.duplicates,
        pruned_meanwhile=pruned,
        seconds=round(time.monotonic() - started),
    )


def received_readings(bodies: list[bytes]) -> set[tuple[str, int]]:
    return {
        (r["device"], r["ts"])
        for body in bodies
        for r in json.loads(body)["records"]
        if json.loads(body)["stream"] == "readings"
    }
