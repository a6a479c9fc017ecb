"""Drain: a sealed backlog delivered to a local Mosquitto at QoS 1 through the real Uplink.

The backlog is committed and sealed with the Buffer beforehand (not timed) and copied afresh for
each run. A run starts the Uplink against a config built by `gateway.config.parse`, waits for the
connection, then calls `uplink.pump(buffer)` in a tight loop, as the daemon's main loop does but
without its pauses, until every envelope is marked delivered: what the Uplink can do. Then the real
daemon drains the same backlog (bench/drain_daemon.py): what the product does. A subscriber in its
own process (the platform) counts the records that arrive, for the end-to-end figures.

Baseline, same broker, same run: paho publishing one record per message at QoS 1 with the same
in-flight window, timed until the last PUBACK.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.common import Children, Deadline, Report, ratio
from bench.drain_daemon import daemon_drain
from bench.subscriber import Platform
from bench.workload import prepare_backlog, record_bytes
from gateway.config import Config, parse
from gateway.daemon import open_buffer
from gateway.localbroker import LocalBroker
from gateway.uplink import Uplink

TARGET_PER_S = 200_000
GATEWAY, SITE = "gw-bench", "bench"
ENVELOPE_RECORDS = 500
IDLE_NAP_S = 0.0005  # the tight loop's pause when a pump acknowledged nothing
BASELINE_QUEUE = 1000  # messages handed to paho and not yet acknowledged, at most


def settings(folder: Path, port: int, inflight: int) -> dict[str, dict[str, Any]]:
    """The gateway's configuration for a run, as the TOML file would hold it."""
    return {
        "gateway": {
            "id": GATEWAY,
            "site": SITE,
            "data_dir": str(folder / "data"),
            "runtime_dir": str(folder / "run"),
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "inflight": inflight,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        },
        "buffer": {"envelope_max_records": ENVELOPE_RECORDS},
    }


def build_config(folder: Path, port: int, inflight: int) -> Config:
    return parse(settings(folder, port, inflight), folder / "gateway.toml")


@dataclass(frozen=True)
class DrainRun:
    inflight: int
    seconds: float  # first pump to the last envelope marked delivered
    end_to_end_s: float | None  # first pump to the last record at the platform
    envelopes: int
    records: int
    received_records: int
    received_seqs: int
    pumps: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "records_per_s": self.records / self.seconds,
            "end_to_end_records_per_s": (
                self.received_records / self.end_to_end_s if self.end_to_end_s else None
            ),
        }


def drain_once(
    config: Config,
    envelopes: int,
    records: int,
    platform: Platform,
    deadline: Deadline,
) -> DrainRun:
    platform.reset()
    buffer = open_buffer(config)
    uplink = Uplink(config, lambda: {"contract": "cgw/v1", "bench": True}, lambda: {})
    uplink.start()
    try:
        while not uplink.state.connected:
            deadline.check("connecting to the broker")
            time.sleep(0.01)
        delivered = pumps = 0
        started = time.monotonic()
        while delivered < envelopes:
            deadline.check(f"draining ({delivered} of {envelopes} envelopes delivered)")
            acknowledged = uplink.pump(buffer)
            delivered += acknowledged
            pumps += 1
            if not acknowledged:
                time.sleep(IDLE_NAP_S)
        seconds = time.monotonic() - started
        left = buffer.stats().backlog_envelopes
        if left:
            raise RuntimeError(f"{left} envelopes still undelivered after the drain")
        arrived = platform.wait_for(records, timeout_s=min(30.0, max(deadline.left(), 1.0)))
    finally:
        uplink.stop()
        buffer.close()
    last = arrived["last_monotonic"]
    return DrainRun(
        inflight=config.mqtt.inflight,
        seconds=seconds,
        end_to_end_s=(last - started) if last is not None else None,
        envelopes=envelopes,
        records=records,
        received_records=int(arrived["records"]),
        received_seqs=int(arrived["distinct_seqs"]),
        pumps=pumps,
    )


def baseline_once(
    port: int,
    topic: str,
    records: Sequence[bytes],
    inflight: int,
    platform: Platform,
    deadline: Deadline,
) -> dict[str, Any]:
    """paho alone: one record per QoS 1 message, timed from the first publish to the last PUBACK."""
    platform.reset()
    acked = 0
    all_acked = threading.Event()
    connected = threading.Event()
    # paho keys queued messages by their 16-bit message id: more than 65,535 outstanding and ids
    # collide, messages are lost and never acknowledged. So the queue in paho stays bounded.
    room = threading.Semaphore(BASELINE_QUEUE)

    def on_publish(
        client: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        nonlocal acked
        acked += 1
        room.release()
        if acked == len(records):
            all_acked.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-baseline", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(inflight)
    client.on_publish = on_publish
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("the baseline publisher could not connect")
        started = time.monotonic()
        for record in records:
            while not room.acquire(timeout=1.0):
                deadline.check(f"baseline: {acked} of {len(records)} PUBACKs")
            client.publish(topic, record, qos=1)
        if not all_acked.wait(max(deadline.left(), 1.0)):
            raise TimeoutError(f"baseline: {acked} of {len(records)} PUBACKs")
        seconds = time.monotonic() - started
        arrived = platform.wait_for(len(records), timeout_s=min(30.0, max(deadline.left(), 1.0)))
    finally:
        client.disconnect()
        client.loop_stop()
    last = arrived["last_monotonic"]
    end_to_end = (last - started) if last is not None else None
    return {
        "records": len(records),
        "inflight": inflight,
        "seconds": seconds,
        "records_per_s": len(records) / seconds,
        "end_to_end_s": end_to_end,
        "received_records": arrived["records"],
        "end_to_end_records_per_s": arrived["records"] / end_to_end if end_to_end else None,
    }


def fresh_copy(prepared: Config, folder: Path, port: int, inflight: int) -> Config:
    """A config of its own for one run, with a copy of the prepared backlog and key."""
    config = build_config(folder, port, inflight)
    config.data_dir.mkdir(parents=True)
    shutil.copyfile(prepared.data_dir / "buffer.db", config.data_dir / "buffer.db")
    shutil.copyfile(prepared.signing_key, config.signing_key)
    config.signing_key.chmod(0o600)
    return config


def run(
    records: int,
    baseline_records: int,
    inflights: Sequence[int],
    daemon_inflights: Sequence[int] = (32,),
    default_inflight: int = 32,
    time_limit_s: float = 900.0,
    directory: Path | None = None,
) -> Report:
    """Uplink runs for each of `inflights` (the default window first), real daemon runs for each
    of `daemon_inflights`, then the baseline."""
    deadline = Deadline(time_limit_s)
    report = Report(
        "drain", f"drain: {records:,} records in envelopes of {ENVELOPE_RECORDS}, QoS 1"
    )
    with (
        tempfile.TemporaryDirectory(prefix="cgw-bench-", dir=directory) as tmp,
        Children() as children,
        LocalBroker(workdir=Path(tmp)) as broker,
    ):
        folder = Path(tmp)
        prepared = build_config(folder / "prepared", broker.port, default_inflight)
        started = time.monotonic()
        envelopes, db_bytes = prepare_backlog(prepared, records, deadline)
        report.details.update(
            records=records,
            envelopes=envelopes,
            database_bytes=db_bytes,
            prepare_s=time.monotonic() - started,
            target_per_s=TARGET_PER_S,
            broker="mosquitto (LocalBroker), loopback",
            topic=f"{prepared.topic_base}/readings",
        )
        platform = Platform(children, broker.port, f"{prepared.topic_base}/+")
        windows = [default_inflight, *(n for n in inflights if n != default_inflight)]
        runs: list[dict[str, Any]] = []
        for number, inflight in enumerate(windows):
            config = fresh_copy(prepared, folder / f"run{number}", broker.port, inflight)
            runs.append(drain_once(config, envelopes, records, platform, deadline).as_dict())
            shutil.rmtree(config.data_dir)
        daemon_runs: list[dict[str, Any]] = []
        for number, inflight in enumerate(daemon_inflights):
            config = fresh_copy(prepared, folder / f"daemon{number}", broker.port, inflight)
            tables = settings(config.path.parent, broker.port, inflight)
            daemon_runs.append(daemon_drain(children, config, tables, records, platform, deadline))
            shutil.rmtree(config.data_dir)
        baseline = baseline_once(
            broker.port,
            f"{prepared.topic_base}/baseline",
            list(record_bytes(baseline_records)),
            default_inflight,
            platform,
            deadline,
        )
    report.details.update(runs=runs, daemon_runs=daemon_runs, baseline=baseline)
    summarise(report, runs, daemon_runs, baseline, records)
    return report


def summarise(
    report: Report,
    runs: list[dict[str, Any]],
    daemon_runs: list[dict[str, Any]],
    baseline: dict[str, Any],
    records: int,
) -> None:
    main = runs[0]
    rate, base_rate = main["records_per_s"], baseline["records_per_s"]
    report.add("records_per_s", f"Uplink: records/s (inflight {main['inflight']})", rate, "/s")
    report.add("drain_s", f"Uplink: {records:,} records drained in", main["seconds"], "s")
    if main["end_to_end_records_per_s"]:
        report.add(
            "end_to_end_per_s",
            f"Uplink end to end: records/s at the platform ({main['received_records']:,} arrived)",
            main["end_to_end_records_per_s"],
            "/s",
        )
    report.add(
        "baseline_per_s",
        f"baseline: paho, 1 record/message (inflight {baseline['inflight']})",
        base_rate,
        "/s",
    )
    if baseline["end_to_end_records_per_s"]:
        report.add(
            "baseline_end_to_end_per_s",
            "baseline end to end: records/s at the platform",
            baseline["end_to_end_records_per_s"],
            "/s",
        )
    report.add("ratio", "ratio Uplink/baseline", ratio(rate, base_rate))
    report.add("target_ratio", f"Uplink vs target {TARGET_PER_S:,}/s", rate / TARGET_PER_S)
    for other in runs[1:]:
        report.add(
            f"records_per_s_inflight_{other['inflight']}",
            f"  Uplink, inflight {other['inflight']}: records/s",
            other["records_per_s"],
            f"/s (x{other['records_per_s'] / rate:.2f})",
        )
    for daemon in daemon_runs:
        report.add(
            f"daemon_records_per_s_inflight_{daemon['inflight']}",
            f"daemon (cgw run), inflight {daemon['inflight']}: records/s",
            daemon["records_per_s"],
            f"/s (x{daemon['records_per_s'] / rate:.2f}; {daemon['seconds']:.1f} s)",
        )
        report.add(
            f"daemon_target_ratio_{daemon['inflight']}",
            f"  vs target {TARGET_PER_S:,}/s",
            daemon["records_per_s"] / TARGET_PER_S,
        )
        report.add(
            f"daemon_peak_rss_mb_{daemon['inflight']}",
            "  daemon VmHWM (peak RSS) while draining",
            daemon["peak_rss_mb"],
            "MB",
        )
