"""The whole path, with real parts: emulated meters (Modbus TCP bytes) -> `cgw run` -> Mosquitto."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from buffer.envelope import GENESIS_PREV
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from gateway.localbroker import LocalBroker
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import Subscriber, wait_until

METERS = [Meter("incomer", 1, "eastron_sdm630"), Meter("compressor", 2, "chint_dtsu666")]


def public_key(folder: Path) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(
        base64.b64decode((folder / "data" / "signing.pub").read_text())
    )


def check_independently(bodies: list[bytes], key: Ed25519PublicKey) -> None:
    """Verify with a stock JCS library and Ed25519, not with the code that signed."""
    by_seq = {}
    for body in bodies:
        envelope = json.loads(body)
        sig = envelope.pop("sig")
        signed = rfc8785.dumps(envelope)
        key.verify(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), signed)
        assert body == rfc8785.dumps({**envelope, "sig": sig})  # published bytes are the JCS form
        by_seq[envelope["seq"]] = (envelope["prev"], hashlib.sha256(signed).hexdigest())
    seqs = sorted(by_seq)
    assert seqs == list(range(1, len(seqs) + 1)), "sequence has gaps"
    assert by_seq[1][0] == GENESIS_PREV
    for seq in seqs[1:]:
        assert by_seq[seq][0] == by_seq[seq - 1][1], f"chain broken at {seq}"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_readings_reach_the_platform_signed_and_sigterm_stops_cleanly(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer, protocol: str
) -> None:
    port = emulator.serve_tcp()
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=port,
        mqtt_port=broker.port,
        mqtt_extra=f'protocol = "{protocol}"',
    )
    with Subscriber(broker.port) as platform:
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(lambda: len(platform.seqs()) >= 5, 30, "five envelopes")
        status = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["daemon"]["running"] and report["daemon"]["uplink"]["connected"]
        assert {d: h["last_quality"] for d, h in report["daemon"]["devices"].items()} == {
            "incomer": "ok",
            "compressor": "ok",
        }
        assert daemon.stop() == 0
        wait_until(lambda: platform.last_json("status")["state"] == "offline", 10, "offline status")

    bodies = platform.envelopes()
    check_independently(bodies, public_key(tmp_path))
    records = [r for b in bodies for r in json.loads(b)["records"]]
    assert {r["device"] for r in records} == {"incomer", "compressor"}
    for r in records:
        assert r["quality"] == "ok"
        assert 200 < r["values"]["voltage_l1_v"] < 260 and 49 < r["values"]["frequency_hz"] < 51
    # timestamps are UTC milliseconds of the response, per device increasing
    for device in ("incomer", "compressor"):
        stamps = [r["ts"] for r in records if r["device"] == device]
        assert stamps == sorted(stamps) and abs(stamps[-1] / 1000 - time.time()) < 60
    meta = platform.last_json("meta")
    assert meta["key"]["public_key"] == (tmp_path / "data" / "signing.pub").read_text().strip()
    assert meta["devices"][0]["quantities"]["active_energy_import_kwh"] == "kWh"
    buffer = DaemonProcess(config).buffer()
    stats = buffer.stats()
    assert stats.backlog_envelopes == 0 and stats.pending_records == 0  # flushed and delivered
    assert stats.last_seq == max(platform.seqs())
    assert "Traceback" not in DaemonProcess(config).logs()


def test_a_broker_outage_loses_nothing_and_live_data_goes_first(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer
) -> None:
    port = emulator.serve_tcp()
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=port,
        mqtt_port=broker.port,
        interval_s=0.1,
        mqtt_extra="inflight = 1",
        envelope_max_records=1,  # many small envelopes: the backlog takes a while to drain
    )
    with Subscriber(broker.port) as platform:
        daemon = DaemonProcess(config).start()
        wait_until(lambda: len(platform.seqs()) >= 3, 30, "first envelopes")
        broker.stop()
        outage_start = daemon.buffer().last_seq
        wait_until(
            lambda: daemon.buffer().last_seq >= outage_start + 200, 30, "a backlog while offline"
        )
        live_mark = daemon.buffer().last_seq
        broker.start()
        wait_until(lambda: len(platform.seqs()) >= live_mark + 5, 60, "the backlog to drain")
        assert daemon.stop() == 0
        wait_until(
            lambda: len(platform.seqs()) == daemon.buffer().last_seq, 10, "the last envelopes"
        )
    arrival = [json.loads(b)["seq"] for b in platform.envelopes()]
    backlog_done = max(i for i, s in enumerate(arrival) if s <= live_mark)
    first_live = min(i for i, s in enumerate(arrival) if s > live_mark)
    assert first_live < backlog_done, "new envelopes waited behind the backlog"
    check_independently(platform.envelopes(), public_key(tmp_path))
    assert "lost the broker connection" in daemon.logs()


def test_meter_faults_are_flagged_and_do_not_disturb_other_meters(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer, meters: list[EmulatedMeter]
) -> None:
    port = emulator.serve_tcp()
    extra = [Meter("silent", 3), Meter("garbage", 4), Meter("exception", 5)]
    for meter in extra:
        faulty = EmulatedMeter(meter.unit, meters[0].profile, seed=meter.unit, fault=meter.id)
        emulator.meters[meter.unit] = faulty
    config = write_config(tmp_path, METERS + extra, tcp_port=port, mqtt_port=broker.port)
    with Subscriber(broker.port) as platform:
        daemon = DaemonProcess(config).start()

        def by_device() -> dict[str, set[str]]:
            seen: dict[str, set[str]] = {}
            for body in platform.envelopes():
                for r in json.loads(body)["records"]:
                    seen.setdefault(r["device"], set()).add(r["quality"])
            return seen

        wait_until(
            lambda: len(by_device()) == 5 and all(len(v) for v in by_device().values()),
            30,
            "all devices",
        )
        emulator.meters[1].fault = "nan"
        wait_until(lambda: "out_of_range" in by_device().get("incomer", set()), 20, "NaN flagged")
        assert daemon.process is not None and daemon.process.poll() is None
        assert daemon.stop() == 0
    seen = by_device()
    assert seen["silent"] == {"timeout"}
    assert seen["garbage"] == {"invalid_response"}
    assert seen["exception"] == {"exception"}
    assert seen["compressor"] == {"ok"}
    records = [r for b in platform.envelopes() for r in json.loads(b)["records"]]
    flagged = [r for r in records if r["device"] == "incomer" and r["quality"] == "out_of_range"]
    assert all(set(r["flags"].values()) == {"invalid"} for r in flagged)
    failed = [r for r in records if r["device"] == "exception"]
    assert all("Modbus exception 4" in r["error"] and not r["values"] for r in failed)
    logs = daemon.logs()
    assert "Traceback" not in logs
    assert logs.count("device silent on bus bus: timeout") == 1  # logged once, not per poll


def committed_readings(db: Path) -> set[tuple[str, int]]:
    """(device, ts) of every reading committed in the buffer, sealed or not."""
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        pending = [json.loads(r) for (r,) in conn.execute("SELECT record FROM pending")]
        sealed = [
            r for (b,) in conn.execute("SELECT body FROM bodies") for r in json.loads(b)["records"]
        ]
    return {(r["device"], r["ts"]) for r in pending + sealed}


def test_sigkill_at_random_moments_loses_no_committed_reading(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer
) -> None:
    port = emulator.serve_tcp()
    config = write_config(
        tmp_path, METERS, tcp_port=port, mqtt_port=broker.port, interval_s=0.1, seal_interval_s=0.2
    )
    db = tmp_path / "data" / "buffer.db"
    rng = random.Random(7)
    committed: set[tuple[str, int]] = set()
    with Subscriber(broker.port) as platform:
        for kill in range(20):
            daemon = DaemonProcess(config).start()
            # Start-up (imports, key, first poll) takes 0.5-0.8 s here: some kills land in it,
            # most while polling, committing and publishing.
            time.sleep(rng.uniform(0.7, 2.0))
            daemon.kill()
            if kill == 0:  # the broker publishes the will for the vanished gateway
                wait_until(
                    lambda: platform.last_json("status")["state"] == "offline", 10, "the will"
                )
                assert platform.last_json("status")["reason"] == "connection lost"
            now_committed = committed_readings(db)
            assert committed <= now_committed, "a committed reading vanished from the buffer"
            committed = now_committed
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(
            lambda: daemon.buffer().stats().backlog_envelopes == 0, 60, "the backlog to drain"
        )
        assert daemon.stop() == 0
        last_seq = daemon.buffer().last_seq
        wait_until(
            lambda: platform.seqs() == set(range(1, last_seq + 1)), 20, "every seq delivered"
        )
    bodies = platform.envelopes()
    check_independently(bodies, public_key(tmp_path))
    by_seq: dict[int, bytes] = {}
    for body in bodies:
        seq = json.loads(body)["seq"]
        assert by_seq.setdefault(seq, body) == body, f"seq {seq} arrived twice with different bytes"
    received = {(r["device"], r["ts"]) for b in by_seq.values() for r in json.loads(b)["records"]}
    assert len(committed) > 100 and committed <= received
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
