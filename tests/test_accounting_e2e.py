"""Accounting in the real daemon: emulated meters -> `cgw run` -> intervals and alarms on Mosquitto."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

from drivers.emulation.server import EmulatorServer
from gateway.localbroker import LocalBroker
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.platform import Subscriber, wait_until
from tests.support.schemas import problems, schema_for
from tests.test_gateway_e2e import check_independently, public_key

ACCOUNTING = """
[accounting]
interval_min = 1
grace_s = 2
checkpoint_s = 1

[[accounting.meters]]
device = "incomer"
role = "grid_import"

[[accounting.meters]]
device = "compressor"
role = "load"

[[accounting.limits]]
device = "incomer"
quantity = "voltage_l1_v"
above = 100
for_s = 1
"""


def active_alarms(config: Path) -> list[dict[str, object]]:
    status = subprocess.run(
        [*DaemonProcess.command(config, "status"), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return list(json.loads(status.stdout)["daemon"]["accounting"]["active_alarms"])


def test_intervals_and_alarms_reach_the_platform_signed_in_one_chain(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer
) -> None:
    port = emulator.serve_tcp()
    config = write_config(
        tmp_path,
        [Meter("incomer", 1), Meter("compressor", 2, "chint_dtsu666")],
        tcp_port=port,
        mqtt_port=broker.port,
    )
    text = config.read_text().replace("[gateway]\n", '[gateway]\nclock = "trusted"\n')
    config.write_text(text + ACCOUNTING)
    with Subscriber(broker.port) as platform:
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(lambda: platform.on("alarms"), 30, "the voltage alarm")
        wait_until(
            lambda: (
                [a["alarm"] for a in active_alarms(config)] == ["limit:incomer:voltage_l1_v:above"]
            ),
            10,
            "the alarm in `cgw status`",
        )
        wait_until(lambda: platform.on("intervals"), 75, "the first closed interval")
        assert daemon.stop() == 0

    streams = {
        leaf: [m.payload for m in platform.on(leaf)] for leaf in ("readings", "intervals", "alarms")
    }
    check_independently([b for bodies in streams.values() for b in bodies], public_key(tmp_path))
    results = [r for body in streams["intervals"] for r in json.loads(body)["records"]]
    # (Intervals only: a run across a full hour also closes that hour, which started earlier.)
    first = min(r["start_ms"] for r in results if r["period"] == "interval")
    meter = next(
        r
        for r in results
        if r["kind"] == "meter"
        and r["device"] == "incomer"
        and r["start_ms"] == first
        and r["period"] == "interval"
    )
    site = next(
        r
        for r in results
        if r["kind"] == "site" and r["start_ms"] == first and r["period"] == "interval"
    )
    assert meter["end_ms"] - meter["start_ms"] == 60_000 and meter["revision"] == 0
    # The interval's energy is what the incomer's counter advanced across it, give or take the
    # one reading pair straddling each boundary (0.2 s of polling).
    counter = sorted(
        (r["ts"], Decimal(repr(r["values"]["active_energy_import_kwh"])))
        for body in streams["readings"]
        for r in json.loads(body)["records"]
        if r["device"] == "incomer" and r["quality"] == "ok"
    )
    inside = [v for ts, v in counter if meter["start_ms"] <= ts < meter["end_ms"]]
    after = [v for ts, v in counter if ts >= meter["end_ms"]]
    steps = [b - a for (_, a), (_, b) in pairwise(counter)]
    slack = 2 * max(steps)
    measured = (after[0] if after else inside[-1]) - inside[0]
    assert abs(Decimal(repr(meter["energy"])) - measured) <= slack
    assert meter["energy"] > 0 and meter["readings"] >= len(inside) - 1
    assert meter["kgco2e"] == float(
        (Decimal(repr(meter["kwh"])) * Decimal("0.5306")).quantize(Decimal("0.001"))
    )
    assert site["electricity"]["grid_import_kwh"] == meter["kwh"]
    assert site["co2e"]["scope2_kg"] == meter["kgco2e"]  # the sub-meter is not added on top
    alarm = json.loads(streams["alarms"][0])["records"][0]
    assert (alarm["alarm"], alarm["state"]) == ("limit:incomer:voltage_l1_v:above", "raised")
    meta = platform.last_json("meta")
    assert [m["role"] for m in meta["accounting"]["meters"]] == ["grid_import", "load"]
    # Every message the gateway published, of every kind, is what docs/schemas/ documents.
    kinds = {schema_for(m.topic) for m in platform.messages}
    assert kinds == {"status", "meta", "readings", "intervals", "alarms"}
    states = {json.loads(m.payload)["state"] for m in platform.on("status")}
    assert states == {"online", "offline"}
    for message in platform.messages:
        assert problems(schema_for(message.topic), message.payload) == [], message.topic
    assert "Traceback" not in DaemonProcess(config).logs()
