"""The soak: a mixed bus of 30 devices on one RS-485 line at 9600 baud (24 Modbus meters of 16
shipped models, water and gas meters and a pulse counter among them, and 6 DL/T 645 meters), polled
every 5 s by the real daemon for 20 minutes in the long run (40 s in the short one).

No drift of the poll cadence: each device's n-th reading is due at its first plus n intervals, and
is never further than a fraction of a second from it, however long the run. Memory flat: the
daemon's resident set after warm-up does not grow."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from statistics import mean

from drivers.dlt645.emulation import EmulatedDlt645Meter
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from hil_tests.conftest import size
from hil_tests.lines import gateway_on_a_line
from hil_tests.records import buffered_records, readings_of

INTERVAL_S = 5.0
PREFERRED = ("active_power_w", "active_energy_import_kwh", "water_volume_m3", "gas_volume_m3")
MODELS = [
    "eastron_sdm630", "chint_dtsu666", "eastron_sdm120", "abb_b23", "acrel_adw300",
    "carlo_gavazzi_em24", "carlo_gavazzi_em340", "chint_ddsu666", "eastron_sdm230",
    "finder_7m38", "janitza_umg96rm", "orno_we517", "siemens_pac2200", "socomec_countis_e3x",
    "tuf2000m_water", "fx_gas_flow_totalizer", "generic_pulse_counter_8ch",
]  # fmt: skip
MODBUS = [(unit, MODELS[(unit - 1) % len(MODELS)]) for unit in range(1, 25)]
DLT645 = [f"{100000000000 + i:012d}" for i in range(1, 7)]


def quantities(model: str) -> list[str]:
    offered = [r.quantity for r in load_shipped_profile(model).registers]
    chosen = [q for q in PREFERRED if q in offered]
    return chosen or offered[:2]


def config_text(port: str) -> str:
    modbus = "".join(
        f'[[devices]]\nid = "u{unit}"\nbus = "line"\nunit = {unit}\nprofile = "{model}"\n'
        f"interval_s = {INTERVAL_S}\nquantities = {quantities(model)!r}\n".replace("'", '"')
        for unit, model in MODBUS
    )
    dlt645 = "".join(
        f'[[devices]]\nid = "d{address[-1]}"\nbus = "line"\nprotocol = "dlt645"\n'
        f'address = "{address}"\ninterval_s = {INTERVAL_S}\nidentifiers = ["00010000", "02030000"]\n'
        for address in DLT645
    )
    return (
        '[gateway]\nid = "gw-soak"\nsite = "lab"\ndata_dir = "data"\nruntime_dir = "run"\n'
        "[buffer]\ncommit_interval_s = 5\n[mqtt]\nenabled = false\n"
        f'[[buses]]\nid = "line"\ntype = "rtu"\nport = "{port}"\nbaudrate = 9600\ntimeout_s = 0.5\n'
        + modbus
        + dlt645
    )


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_thirty_devices_at_9600_baud_keep_their_cadence_in_flat_memory(
    tmp_path: Path, record: Callable[..., None]
) -> None:
    duration_s = size(40, 1200)
    server = EmulatorServer(
        [EmulatedMeter(unit, load_shipped_profile(model)) for unit, model in MODBUS],
        [EmulatedDlt645Meter(address) for address in DLT645],
    )
    samples: list[tuple[float, int]] = []
    with gateway_on_a_line(tmp_path, server, config_text) as (line, daemon):
        assert daemon.process is not None
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration_s:
            samples.append((elapsed, rss_kb(daemon.process.pid)))
            time.sleep(2.0)
        status = json.loads((tmp_path / "run" / "status.json").read_text())
        assert daemon.stop() == 0
    bus = status["buses"]["line"]
    assert bus["keeps_up"]
    records = buffered_records(tmp_path / "data" / "buffer.db")
    devices = [f"u{unit}" for unit, _ in MODBUS] + [f"d{a[-1]}" for a in DLT645]
    worst_s, drift_s, polls = 0.0, 0.0, []
    for device in devices:
        readings = readings_of(records, device)
        assert readings and all(r["quality"] == "ok" for r in readings), device
        times = [r["ts"] / 1000 for r in readings]
        # Each reading where the schedule put it: the first plus n intervals, within a fraction.
        lateness = [t - (times[0] + n * INTERVAL_S) for n, t in enumerate(times)]
        worst_s = max(worst_s, max(abs(x) for x in lateness))
        drift_s = max(drift_s, abs(lateness[-1]))
        polls.append(len(times))
    assert worst_s < 1.0 and drift_s < 0.5
    assert min(polls) >= int((duration_s - 2) / INTERVAL_S)
    # Memory: after the first quarter (imports, first plans, caches), the resident set stays flat.
    settled = [kb for t, kb in samples if t > duration_s / 4]
    first_half, second_half = settled[: len(settled) // 2], settled[len(settled) // 2 :]
    growth_kb = mean(second_half) - mean(first_half)
    assert growth_kb < 1024, growth_kb
    # And the trend over the second half alone (least squares), for the record.
    late = [(t, kb) for t, kb in samples if t > duration_s / 2]
    t_mean, kb_mean = mean(t for t, _ in late), mean(kb for _, kb in late)
    slope_kb_s = sum((t - t_mean) * (kb - kb_mean) for t, kb in late) / sum(
        (t - t_mean) ** 2 for t, _ in late
    )
    assert "Traceback" not in daemon.logs()
    record(
        "soak_30_devices",
        line=line.mode,
        duration_s=duration_s,
        devices=len(devices),
        polls_per_device=min(polls),
        worst_offset_from_schedule_s=round(worst_s, 3),
        drift_at_end_s=round(drift_s, 3),
        rss_mb_settled=round(mean(settled) / 1024, 1),
        rss_growth_kb=round(growth_kb),
        rss_trend_second_half_kb_per_h=round(slope_kb_s * 3600),
        bus_busy=f"{bus['demand']:.0%}",
    )
