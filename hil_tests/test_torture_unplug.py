"""The USB-RS485 adapter pulled out and plugged back in, again and again, while the real daemon
polls a Modbus and a DL/T 645 meter on it at 9600 baud.

While it is out every poll is still a record (`no_connection`, naming the missing port), the
daemon stays up and keeps its other duties, and once the adapter is back the meters are read
again within a few polls, without a restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from drivers.dlt645.emulation import EmulatedDlt645Meter
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from hil_tests.conftest import size
from hil_tests.lines import gateway_on_a_line
from hil_tests.records import buffered_records, readings_of
from tests.support.platform import wait_until

INTERVAL_S = 0.5
DEVICES = ("incomer", "office")


def config_text(port: str) -> str:
    return (
        '[gateway]\nid = "gw-usb"\nsite = "lab"\ndata_dir = "data"\nruntime_dir = "run"\n'
        "[buffer]\ncommit_interval_s = 0.5\n[mqtt]\nenabled = false\n"
        f'[[buses]]\nid = "line"\ntype = "rtu"\nport = "{port}"\nbaudrate = 9600\n'
        "timeout_s = 0.3\nbackoff_max_s = 2\n"
        '[[devices]]\nid = "incomer"\nbus = "line"\nunit = 1\nprofile = "eastron_sdm630"\n'
        f'interval_s = {INTERVAL_S}\nquantities = ["voltage_l1_v", "active_energy_import_kwh"]\n'
        '[[devices]]\nid = "office"\nbus = "line"\nprotocol = "dlt645"\n'
        f'address = "000000000007"\ninterval_s = {INTERVAL_S}\nidentifiers = ["00010000"]\n'
    )


def first_ok_after(db: Path, device: str, t: float) -> float | None:
    """When `device` was first read well after wall time `t`, if it was."""
    times = [
        r["ts"] / 1000
        for r in readings_of(buffered_records(db), device)
        if r["quality"] == "ok" and r["ts"] / 1000 > t
    ]
    return min(times, default=None)


def test_an_adapter_unplugged_and_replugged_is_read_again_without_a_restart(
    tmp_path: Path, record: Callable[..., None]
) -> None:
    plugs, out_s = size(2, 5), size(4.0, 30.0)
    server = EmulatorServer(
        [EmulatedMeter(1, load_shipped_profile("eastron_sdm630"))],
        [EmulatedDlt645Meter("000000000007")],
    )
    outages: list[tuple[float, float]] = []
    recoveries: list[float] = []
    db = tmp_path / "data" / "buffer.db"
    with gateway_on_a_line(tmp_path, server, config_text) as (line, daemon):
        pid = daemon.process.pid if daemon.process else None
        time.sleep(2.0)
        for _ in range(plugs):
            pulled = time.time()
            line.unplug()
            time.sleep(out_s)
            line.replug()
            back = time.time()
            outages.append((pulled, back))
            wait_until(
                lambda b=back: all(first_ok_after(db, d, b) for d in DEVICES),
                15,
                "both meters to be read again",
            )
            recoveries.append(max(first_ok_after(db, d, back) or 0 for d in DEVICES) - back)
            time.sleep(1.0)
        assert daemon.process is not None and daemon.process.pid == pid
        assert daemon.stop() == 0
    records = buffered_records(db)
    missing = 0
    for pulled, back in outages:
        for device in DEVICES:
            out = [r for r in readings_of(records, device) if pulled + 1 < r["ts"] / 1000 < back]
            # Polls go on (backed off): every one a record that says why it has no values.
            assert out and all(r["quality"] == "no_connection" for r in out), device
            assert all("not found (adapter unplugged?)" in r["error"] for r in out[1:]), device
            missing += len(out)
    assert max(recoveries) < 2.0 + INTERVAL_S + 1.0  # within one backed-off poll
    assert "Traceback" not in daemon.logs()
    record(
        "torture_unplug",
        line=line.mode,
        unplugs=plugs,
        unplugged_s_each=out_s,
        no_connection_records=missing,
        recovery_s_worst=round(max(recoveries), 2),
        recovery_s_mean=round(sum(recoveries) / len(recoveries), 2),
    )
