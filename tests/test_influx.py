"""The InfluxDB sink: line protocol, its own cursor in the buffer, and a real daemon writing to a real
InfluxDB v2 write API (VictoriaMetrics), read back and checked against the buffer."""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buffer.canonical import canonical
from buffer.store import Buffer
from drivers.emulation.server import EmulatorServer
from drivers.snapshot import Snapshot
from gateway.config import ConfigError, InfluxConfig, load
from gateway.influx import InfluxSink
from gateway.influxhttp import HttpWriter, WriteError
from gateway.lineprotocol import envelope_lines
from gateway.localbroker import LocalBroker
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.keys import make_signer
from tests.support.platform import Subscriber, wait_until
from tests.support.victoria import Labels, VictoriaMetrics, labels

# Records as docs/CONTRACT.md shows them (trimmed of what is not written).
METER_RECORD = {
    "carrier": "electricity",
    "device": "compressor-1",
    "end_ms": 1793500200000,
    "energy": 1.8,
    "expected": 450,
    "flags": ["ok"],
    "held_out": 0,
    "kgce": 0.221,
    "kgco2e": 0.955,
    "kind": "meter",
    "kwh": 1.8,
    "minutes": 15,
    "period": "interval",
    "quantity": "active_energy_import_kwh",
    "readings": 90,
    "revision": 0,
    "role": "load",
    "scope": 2,
    "start": "2026-11-01T10:15:00+08:00",
    "start_ms": 1793499300000,
    "unit": "kWh",
}
SITE_RECORD = {
    "co2e": {"scope1_kg": 0, "scope2_kg": 0.239, "scope3_kg": 0, "total_kg": 0.239},
    "completeness": {
        "devices": {"compressor-1": 0.2},
        "expected": 1530,
        "meets_required": False,
        "rate": 0.117647,
        "received": 180,
    },
    "electricity": {"consumption_kwh": 0.45, "renewable_share": None},
    "end_ms": 1793500200000,
    "flags": ["estimated", "gap"],
    "kind": "site",
    "minutes": 15,
    "period": "interval",
    "revision": 1,
    "standard_coal": {"kgce": 0.055, "tce": 0.000055},
    "start": "2026-11-01T10:15:00+08:00",
    "start_ms": 1793499300000,
}
ALARM_RECORD = {
    "alarm": "limit:compressor-1:active_power_w:above",
    "detail": {"quantity": "active_power_w", "threshold": 5000, "value": 7200},
    "device": "compressor-1",
    "kind": "limit",
    "message": 'compressor-1: "active power" 7.2 kW above 5 kW',
    "severity": "warning",
    "state": "raised",
    "ts": 1793499360000,
}


def envelope(stream: str, *records: dict[str, Any]) -> bytes:
    body = {"gateway": "gw 1", "site": "plant,a", "stream": stream, "seq": 1, "records": records}
    return orjson.dumps(body)


def test_a_reading_is_one_point_per_value_and_one_for_the_poll() -> None:
    reading = Snapshot(
        "main-incomer",
        1732233600123,
        "out_of_range",
        values={"active_energy_import_kwh": 12345, "voltage_l1_v": 999.5},
        flags={"voltage_l1_v": "out_of_range", "frequency_hz": "invalid"},
        clock_unsynced=True,
    ).record()
    failed = Snapshot("m2", 1732233600200, "timeout", error="no answer").record()
    lines, skipped = envelope_lines(envelope("readings", reading, failed))
    tags = "clock=unsynced,device=main-incomer,gateway=gw\\ 1"
    assert [line.decode() for line in lines] == [
        f"cgw_reading,{tags},quantity=active_energy_import_kwh,site=plant\\,a value=12345.0 "
        "1732233600123",
        "cgw_reading,clock=unsynced,device=main-incomer,flag=out_of_range,gateway=gw\\ 1,"
        "quantity=voltage_l1_v,site=plant\\,a value=999.5 1732233600123",
        f"cgw_poll,{tags},quality=out_of_range,site=plant\\,a ok=1i 1732233600123",
        "cgw_poll,device=m2,gateway=gw\\ 1,quality=timeout,site=plant\\,a ok=0i 1732233600200",
    ]
    assert skipped == 0


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
numbers = st.one_of(st.floats(allow_nan=False), st.integers(-(2**53), 2**53), st.none())


@given(
    device=names,
    site=names,
    gateway=names,
    clock=st.sampled_from([None, "unsynced"]),
    quality=st.sampled_from(["ok", "out_of_range", "timeout", "exception"]),
    values=st.dictionaries(names, numbers, max_size=6),
    flags=st.dictionaries(names, st.sampled_from(["out_of_range", "rate_limited", ""])),
    ts=st.integers(0, 2**42),
)
def test_the_readings_fast_path_writes_what_the_generic_encoder_does(
    device: str,
    site: str,
    gateway: str,
    clock: str | None,
    quality: str,
    values: dict[str, float | int | None],
    flags: dict[str, str],
    ts: int,
) -> None:
    from gateway.lineprotocol import POLL, READING, line, number

    record = {"device": device, "ts": ts, "quality": quality, "values": values, "flags": flags}
    if clock:
        record["clock"] = clock
    base = {"site": site, "gateway": gateway, "device": device, "clock": clock}
    expected = [
        line(READING, {**base, "quantity": q, "flag": flags.get(q)}, {"value": text}, ts)
        for q, v in values.items()
        if (text := number(v)) is not None
    ]
    ok = "1i" if quality in ("ok", "out_of_range") else "0i"
    expected.append(line(POLL, {**base, "quality": quality}, {"ok": ok}, ts))
    body = orjson.dumps(
        {"gateway": gateway, "site": site, "stream": "readings", "records": [record]}
    )
    assert envelope_lines(body) == (expected, 0)


def test_interval_site_and_alarm_records() -> None:
    lines, skipped = envelope_lines(envelope("intervals", METER_RECORD, SITE_RECORD))
    base = "gateway=gw\\ 1"
    assert lines[0].decode() == (
        f"cgw_interval,carrier=electricity,device=compressor-1,{base},period=interval,"
        "quantity=active_energy_import_kwh,role=load,scope=2,site=plant\\,a,unit=kWh "
        "energy=1.8,kwh=1.8,kgco2e=0.955,kgce=0.221,held_out=0.0,readings=90i,expected=450i,"
        'revision=0i,flags="ok",ok=1i 1793499300000'
    )
    assert lines[1].decode() == (
        f"cgw_site,{base},period=interval,site=plant\\,a electricity_consumption_kwh=0.45,"
        "co2e_scope1_kg=0.0,co2e_scope2_kg=0.239,co2e_scope3_kg=0.0,co2e_total_kg=0.239,"
        "standard_coal_kgce=0.055,standard_coal_tce=5.5e-05,completeness_expected=1530i,"
        "completeness_meets_required=false,completeness_rate=0.117647,completeness_received=180i,"
        'revision=1i,flags="estimated,gap",ok=0i 1793499300000'
    )
    (alarm,), _ = envelope_lines(envelope("alarms", ALARM_RECORD))
    assert alarm.decode() == (
        "cgw_alarm,alarm=limit:compressor-1:active_power_w:above,device=compressor-1,"
        f"{base},kind=limit,severity=warning,site=plant\\,a,state=raised "
        'active=1i,message="compressor-1: \\"active power\\" 7.2 kW above 5 kW",'
        "detail_threshold=5000.0,detail_value=7200.0 1793499360000"
    )
    broken = {k: v for k, v in METER_RECORD.items() if k != "start_ms"}
    lines, skipped = envelope_lines(envelope("intervals", broken, SITE_RECORD))
    assert skipped == 1 and len(lines) == 1 and lines[0].startswith(b"cgw_site,")
    assert envelope_lines(envelope("future", METER_RECORD)) == ([], 1)


# -- the cursor in the buffer ---------------------------------------------------------------


def records(n: int, start: int = 0) -> list[bytes]:
    return [
        canonical(Snapshot("m", 1_700_000_000_000 + i, "ok", {"active_power_w": 1.5}).record())
        for i in range(start, start + n)
    ]


def sealed_buffer(tmp_path: Path, envelopes: int, per_envelope: int = 50) -> Buffer:
    signer = make_signer(tmp_path)
    buffer = Buffer(
        tmp_path / "buffer.db",
        gateway="gw",
        site="s",
        envelope_max_records=per_envelope,
        quota_bytes=64 << 20,
    )
    for i in range(envelopes):
        buffer.commit("readings", records(per_envelope, i * per_envelope))
        buffer.seal_pending(signer, 1)
    return buffer


def test_prune_keeps_what_influx_still_needs(tmp_path: Path) -> None:
    buffer = sealed_buffer(tmp_path, 40, per_envelope=200)
    buffer.mark_delivered(range(1, 41), 1000)  # MQTT has everything
    assert buffer.track("influx") == 0
    buffer.set_cursor("influx", 10)
    assert buffer.prune(now_ms=20_000, retention_ms=10_000) == (10, 0)  # only seq <= 10 go
    assert [o.seq for o in buffer.after(0, 1000)] == [11, 12, 13, 14, 15]
    assert buffer.backlog_after(10) == (30, 6000)


def test_over_quota_the_oldest_go_first_counted_for_whoever_had_not_taken_them(
    tmp_path: Path,
) -> None:
    buffer = sealed_buffer(tmp_path, 300, per_envelope=20)
    buffer.mark_delivered(range(1, 201), 1000)
    buffer.track("influx")
    buffer.set_cursor("influx", 100)
    buffer.quota_bytes = buffer.used_bytes() // 3
    _, dropped = buffer.prune(now_ms=2000, retention_ms=10_000)  # all within retention
    left = [o.seq for o in buffer.after(0, 100_000)]
    assert left == list(range(left[0], 301)) and 200 < left[0] < 300  # the oldest went first
    gone = range(101, left[0])  # 1-100 were done: no loss to anyone
    mqtt_lost = [s for s in gone if s > 200]
    stats = buffer.stats()
    assert dropped == len(mqtt_lost) == stats.dropped_envelopes
    assert stats.dropped_records == 20 * len(mqtt_lost)
    assert buffer.state_int("influx_dropped_envelopes") == len(gone)
    assert buffer.state_int("influx_dropped_records") == 20 * len(gone)


def test_without_the_sink_pruning_is_as_before_and_a_new_cursor_skips_the_pruned(
    tmp_path: Path,
) -> None:
    buffer = sealed_buffer(tmp_path, 6)
    buffer.mark_delivered(range(1, 6), 1000)
    assert buffer.prune(now_ms=20_000, retention_ms=10_000) == (5, 0)  # no cursor: all delivered
    assert buffer.track("influx") == 5  # starts below the oldest stored envelope
    assert [o.seq for o in buffer.after(5, 1)] == [6]
    assert [o.seq for o in buffer.after(5, 0)] == [6]  # at least one envelope


# -- configuration ------------------------------------------------------------------------

CONFIG = '[gateway]\nid = "gw"\nsite = "s"\n\n[influxdb]\n'


def config_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG + text, encoding="utf-8")
    return path


def test_influxdb_config(tmp_path: Path) -> None:
    assert load(config_with(tmp_path, "")).influxdb == InfluxConfig()  # off without a url
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    influx = load(
        config_with(
            tmp_path,
            'url = "https://influx:8086"\norg = "o"\nbucket = "b"\ntoken_file = "token"\n'
            'batch_records = 10\n[influxdb.tls]\nca_file = "ca.pem"\n',
        )
    ).influxdb
    assert influx.enabled and influx.token == "s3cret" and influx.batch_records == 10
    assert influx.ca_file == tmp_path / "ca.pem" and influx.verify_tls
    token.chmod(0o644)
    mistakes = [
        ('url = "http://x:8086"\norg = "o"\nbucket = "b"\ntoken_file = "token"\n', "token_file"),
        (
            'url = "http://x:8086"\norg = "o"\nbucket = "b"\ntoken = "t"\ntoken_file = "t"\n',
            "token_file",
        ),
        ('url = "influx:8086"\norg = "o"\nbucket = "b"\n', "url"),
        ('url = "http://x:8086"\norg = "o"\n', "bucket"),
        ("enabled = true\n", "url"),
        ('url = "http://x:8086"\norg = "o"\nbucket = "b"\nbatch_size = 5\n', "batch_size"),
        (
            'url = "http://x:8086"\norg = "o"\nbucket = "b"\n[influxdb.tls]\nverify = false\n',
            "verify",
        ),
    ]
    for text, key in mistakes:
        with pytest.raises(ConfigError) as error:
            load(config_with(tmp_path, text))
        assert error.value.key.endswith(key), (text, error.value)
    off = load(
        config_with(tmp_path, 'enabled = false\nurl = "http://x:8086"\norg = "o"\nbucket = "b"')
    )
    assert not off.influxdb.enabled


# -- the sink against a writer that fails on demand -------------------------------------------


class FlakyWriter:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.failures: list[WriteError] = []

    def write(self, lines: list[bytes]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.lines.extend(lines)

    def close(self) -> None:
        pass


def run_sink(sink: InfluxSink, buffer: Buffer, until: int) -> None:
    deadline = time.monotonic() + 10
    while sink.cursor < until and time.monotonic() < deadline:
        sink.pump(buffer)
        time.sleep(0.005)


def test_the_sink_retries_until_written_and_refused_data_does_not_block_it(tmp_path: Path) -> None:
    buffer = sealed_buffer(tmp_path, 8, per_envelope=2)
    writer = FlakyWriter()
    settings = InfluxConfig(True, "http://x", "o", "b", batch_records=4, retry_min_s=0.01)
    sink = InfluxSink(settings, buffer, writer)
    writer.failures = [WriteError("down"), WriteError("busy", 503), WriteError("bad", 400)]
    sink.start()
    run_sink(sink, buffer, 8)
    sink.stop(buffer)
    assert buffer.state_int("influx_seq") == 8
    stamps = Counter(int(line.rsplit(b" ", 1)[1]) for line in writer.lines if b"cgw_poll" in line)
    assert set(stamps.values()) == {1}  # nothing twice
    assert len(stamps) == 16 - 4  # the batch refused (HTTP 400) is not sent again
    status = sink.status(buffer)
    assert status["failed_attempts"] == 2 and status["rejected_points"] == 8
    assert status["backlog_envelopes"] == 0 and status["last_error"] is None


# -- a real daemon writing to a real server ----------------------------------------------------

METERS = [Meter("incomer", 1, "eastron_sdm630"), Meter("compressor", 2, "chint_dtsu666")]
ACCOUNTING = """
[accounting]
interval_min = 1
grace_s = 1
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


def influx_config(
    folder: Path, meters_port: int, mqtt_port: int | None, vm: VictoriaMetrics, extra: str = ""
) -> Path:
    config = write_config(folder, METERS, tcp_port=meters_port, mqtt_port=mqtt_port)
    text = config.read_text().replace("[gateway]\n", '[gateway]\nclock = "trusted"\n')
    config.write_text(
        f'{text}\n[influxdb]\nurl = "{vm.url}"\norg = "factory"\nbucket = "energy"\n'
        f"flush_interval_s = 0.3\nretry_min_s = 0.2\nretry_max_s = 0.5\nbatch_records = 40\n"
        f"{extra}"
    )
    return config


def cursor(buffer: Buffer) -> int:
    return buffer.state_int("influx_seq")


def stored(buffer: Buffer) -> list[dict[str, Any]]:
    return [json.loads(body) for body in buffer.envelopes()]


def expected_samples(envelopes: list[dict[str, Any]]) -> dict[Labels, list[tuple[int, float, int]]]:
    """What each record should have become, worked out here from the contract (not with the
    encoder under test): (series) -> [(timestamp, value, seq)], one entry per record."""
    out: dict[Labels, list[tuple[int, float, int]]] = {}
    for e in envelopes:
        base = {"site": e["site"], "gateway": e["gateway"]}
        for r in e["records"]:
            points: list[tuple[Labels, int, float]] = []
            if e["stream"] == "readings":
                clock = {"clock": r["clock"]} if "clock" in r else {}
                common = {**base, "device": r["device"], **clock}
                for quantity, value in r["values"].items():
                    flag = r.get("flags", {}).get(quantity)
                    tags = {**common, "quantity": quantity, **({"flag": flag} if flag else {})}
                    points.append((labels("cgw_reading_value", **tags), r["ts"], value))
                ok = float(r["quality"] in ("ok", "out_of_range"))
                tags = {**common, "quality": r["quality"]}
                points.append((labels("cgw_poll_ok", **tags), r["ts"], ok))
            elif e["stream"] == "intervals" and r["kind"] == "meter":
                keys = ("device", "quantity", "period", "role", "carrier", "unit", "scope")
                tags = {**base, **{k: r[k] for k in keys if r.get(k) is not None}}
                points.append((labels("cgw_interval_energy", **tags), r["start_ms"], r["energy"]))
            elif e["stream"] == "intervals":
                tags = {**base, "period": r["period"]}
                total = r["co2e"]["total_kg"]
                points.append((labels("cgw_site_co2e_total_kg", **tags), r["start_ms"], total))
            elif e["stream"] == "alarms":
                keys = ("alarm", "kind", "severity", "state")
                tags = {**base, **{k: r[k] for k in keys}, "device": r["device"]}
                active = float(r["state"] == "raised")
                points.append((labels("cgw_alarm_active", **tags), r["ts"], active))
            for series, ts, value in points:
                out.setdefault(series, []).append((ts, float(value), e["seq"]))
    return out


def written(vm: VictoriaMetrics, expected: dict[Labels, Any]) -> dict[Labels, list[Any]]:
    """The stored samples once everything expected is searchable: VictoriaMetrics makes what it
    accepted searchable within a second or two, /internal/force_flush notwithstanding."""
    names = (
        "cgw_reading_value|cgw_poll_ok|cgw_interval_energy|cgw_site_co2e_total_kg|cgw_alarm_active"
    )
    match = f'{{__name__=~"{names}"}}'
    want = sum(len(points) for points in expected.values())
    deadline = time.monotonic() + 10
    while True:
        series = vm.export(match)
        if sum(len(v) for v in series.values()) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(1.5)  # for anything written twice to show too
    return {k: sorted(v) for k, v in vm.export(match).items()}


def compare(vm: VictoriaMetrics, envelopes: list[dict[str, Any]]) -> set[int]:
    """Every record's points are stored with their values; returns the seqs of envelopes whose
    points are stored more than once."""
    expected = expected_samples(envelopes)
    actual = written(vm, expected)
    assert set(actual) == set(expected)
    doubled: set[int] = set()
    for series, want in expected.items():
        have = Counter(ts for ts, _ in actual[series])
        need = Counter(ts for ts, _, _ in want)
        assert set(have) == set(need), f"{series}: missing {set(need) - set(have)}"
        doubled |= {seq for ts, _, seq in want if have[ts] > need[ts]}
        values = dict(actual[series])
        for ts, value, _ in want:
            assert math.isclose(values[ts], value, rel_tol=1e-9, abs_tol=1e-9), (series, ts)
    return doubled


def test_a_real_daemon_writes_everything_once_and_each_uplink_rides_out_the_others_outage(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer
) -> None:
    with VictoriaMetrics(tmp_path / "vm") as vm, Subscriber(broker.port) as platform:
        config = influx_config(tmp_path, emulator.serve_tcp(), broker.port, vm, ACCOUNTING)
        daemon = DaemonProcess(config).start().wait_running()
        buffer = daemon.buffer()
        wait_until(lambda: cursor(buffer) >= 3, 20, "the first writes to InfluxDB")

        vm.stop()  # InfluxDB down: MQTT goes on, the InfluxDB cursor waits
        time.sleep(0.5)
        stuck = cursor(buffer)
        wait_until(lambda: max(platform.seqs()) >= stuck + 6, 20, "MQTT during the outage")
        assert cursor(buffer) == stuck
        vm.start()
        wait_until(lambda: cursor(buffer) > stuck + 6, 20, "InfluxDB to catch up")

        broker.stop()  # MQTT down: InfluxDB goes on
        time.sleep(0.5)
        delivered = buffer.state_int("last_seq") - buffer.stats().backlog_envelopes
        wait_until(lambda: cursor(buffer) >= delivered + 6, 20, "InfluxDB during the outage")
        assert buffer.stats().backlog_envelopes >= 6
        broker.start()

        assert daemon.stop() == 0  # a clean stop writes what was sealed
        assert cursor(buffer) == buffer.state_int("last_seq")
        status = json.loads((tmp_path / "run" / "status.json").read_text())["influxdb"]
        assert status["backlog_envelopes"] == 0 and status["failed_attempts"] >= 1
        daemon = DaemonProcess(config).start().wait_running()  # and resumes at its cursor

        def closed() -> bool:
            kinds = {(e["stream"], e["seq"] <= cursor(buffer)) for e in stored(buffer)}
            return ("intervals", True) in kinds and ("alarms", True) in kinds

        wait_until(closed, 75, "an interval and an alarm written to InfluxDB")
        assert daemon.stop() == 0
        wait_until(lambda: buffer.stats().backlog_envelopes == 0, 20, "MQTT's backlog")
        envelopes = stored(buffer)
        assert platform.seqs() >= {e["seq"] for e in envelopes if e["stream"] == "readings"}
        assert compare(vm, envelopes) == set()  # nothing twice
    logs = daemon.logs()
    assert "Traceback" not in logs
    assert logs.count("InfluxDB write failed") == 1 and "InfluxDB writes resumed" in logs


def test_after_sigkill_the_daemon_resumes_at_its_cursor_and_resends_at_most_the_last_batch(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    with VictoriaMetrics(tmp_path / "vm") as vm:
        config = influx_config(tmp_path, emulator.serve_tcp(), None, vm)
        kills = 4
        rng = random.Random(3)
        for _ in range(kills):
            daemon = DaemonProcess(config).start().wait_running()
            buffer = daemon.buffer()
            at = cursor(buffer)
            wait_until(lambda: cursor(buffer) >= at + 3, 20, "writes")  # noqa: B023
            time.sleep(rng.uniform(0, 0.5))  # anywhere in the write cycle
            daemon.kill()
        daemon = DaemonProcess(config).start().wait_running()
        assert daemon.stop() == 0
        envelopes = stored(daemon.buffer())
        assert cursor(daemon.buffer()) == envelopes[-1]["seq"]
        doubled = sorted(compare(vm, envelopes))  # nothing missing
    # What was sent twice is at most the batch in flight at each kill: a run of seqs each.
    runs = sum(1 for i, seq in enumerate(doubled) if i == 0 or doubled[i - 1] != seq - 1)
    assert runs <= kills and len(doubled) <= kills * 40


def test_victoriametrics_with_dedup_keeps_a_resent_batch_once(tmp_path: Path) -> None:
    with VictoriaMetrics(tmp_path / "vm", dedup=True) as vm:
        settings = InfluxConfig(True, vm.url, "o", "b")
        writer = HttpWriter(settings)
        now = int(time.time() * 1000)
        lines = [
            f"cgw_reading,device=d,quantity=q value={i}.5 {now + i}".encode() for i in range(3)
        ]
        writer.write(lines)
        writer.write(lines)  # a crash between the answer and the cursor's commit
        writer.close()
        wait_until(lambda: len(vm.samples("cgw_reading_value")) == 3, 10, "the points")
        time.sleep(1.5)  # VictoriaMetrics makes what it accepted searchable within a second or two
        assert list(vm.samples("cgw_reading_value").values()) == [1, 1, 1]
    with pytest.raises(WriteError) as down:
        HttpWriter(settings).write(lines)
    assert down.value.retry and "connection refused" in str(down.value)
