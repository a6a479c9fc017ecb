"""A 72-hour broker outage, time-compressed: ten meters polled every 0.1 s stand for ten meters
polled every minute (the long run: 4,320 polls each, 72 h; the short run 144 each, 72 h at 30-min
polls). The broker is down from before the first poll to after the last; then it comes back.

Figures: readings produced and delivered, the backlog, and the time the gateway takes to drain
it. Every reading polled must arrive, once verified, in one unbroken chain."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from gateway.localbroker import LocalBroker
from hil_tests.conftest import size
from hil_tests.records import delivered_records, verified
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import Subscriber, wait_until
from tests.test_disk import polls
from tests.test_gateway_e2e import committed_readings

METERS = [Meter(f"m{unit}", unit) for unit in range(1, 11)]
INTERVAL_S = 0.1
OUTAGE_H = 72


def test_a_72_hour_outage_drains_completely(
    tmp_path: Path, broker: LocalBroker, record: Callable[..., None]
) -> None:
    polls_each = size(144, 4320)
    stands_for_s = OUTAGE_H * 3600 / polls_each  # the real poll interval one poll stands for
    profile = load_shipped_profile("eastron_sdm630")
    meters = EmulatorServer([EmulatedMeter(m.unit, profile) for m in METERS])
    config = write_config(
        tmp_path,
        METERS,
        tcp_port=meters.serve_tcp(),
        mqtt_port=broker.port,
        interval_s=INTERVAL_S,
        seal_interval_s=1.0,
        envelope_max_records=500,
    )
    quantities = 'quantities = ["voltage_l1_v", "active_power_w", "active_energy_import_kwh"]\n'
    config.write_text(
        config.read_text().replace("interval_s = 0.1\n", "interval_s = 0.1\n" + quantities)
    )
    db = tmp_path / "data" / "buffer.db"
    try:
        with Subscriber(broker.port) as platform:
            broker.stop()  # the platform's session stays on the broker's disk
            daemon = DaemonProcess(config).start().wait_running()
            wait_until(
                lambda: polls(config) >= polls_each * len(METERS),
                polls_each * 0.3 + 60,
                "72 h of polls",
            )
            meters.stop()  # the outage ends: no new readings from here on
            time.sleep(1.5)  # the last poll committed and sealed
            stats = daemon.buffer().stats()
            backlog_records = stats.backlog_records + stats.pending_records
            backlog_bytes = db.stat().st_size
            produced = committed_readings(db)
            back = time.monotonic()
            broker.start()
            wait_until(lambda: daemon.buffer().stats().backlog_envelopes == 0, 600, "the drain")
            drain_s = time.monotonic() - back
            last_seq = daemon.buffer().last_seq
            wait_until(lambda: platform.seqs() >= set(range(1, last_seq + 1)), 60, "every envelope")
            assert daemon.stop() == 0
            bodies = platform.envelopes()
    finally:
        meters.stop()
    gateway = verified(tmp_path / "data", bodies)
    assert gateway.missing == [] and gateway.first_seq == 1
    records = delivered_records(bodies, "readings")
    delivered = {(r["device"], r["ts"]) for r in records}
    assert produced <= delivered
    ok = [r for r in records if r["quality"] == "ok"]
    assert len(ok) >= 0.99 * polls_each * len(METERS)
    assert "Traceback" not in daemon.logs()
    record(
        "torture_outage_72h",
        outage_h=OUTAGE_H,
        one_poll_stands_for_s=round(stands_for_s),
        meters=len(METERS),
        readings_produced=len(produced),
        readings_delivered=len(delivered),
        backlog_records=backlog_records,
        backlog_mb=round(backlog_bytes / 1e6, 1),
        envelopes=last_seq,
        drain_s=round(drain_s, 1),
        drain_records_per_s=round(backlog_records / drain_s),
    )
