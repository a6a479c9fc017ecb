"""InfluxDB sink: a sealed backlog written to a real InfluxDB v2 write API (VictoriaMetrics) through
the real InfluxSink, as the daemon does after an InfluxDB outage.

Figures, all from one run against the same server:
- encoding: line protocol made from the stored envelopes, records/s (no network);
- baseline: the same lines, encoded beforehand, posted by the same writer in the sink's chunk size:
  what the server and the HTTP client take at most;
- sink: the backlog through `InfluxSink.pump` until its cursor reaches the last envelope, records/s,
  and its ratio to the baseline;
- what that means on site: the hours a 72 h backlog of 50 meters polled every second takes to catch
  up (on this machine; a Pi 4 is several times slower).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Deadline, Report, ratio
from bench.workload import prepare_backlog
from gateway.config import Config, parse
from gateway.daemon import open_buffer
from gateway.influx import CHUNK_LINES, InfluxSink
from gateway.influxhttp import HttpWriter
from gateway.lineprotocol import envelope_lines
from tests.support.victoria import VictoriaMetrics

ENVELOPE_RECORDS = 500
SITE_METERS = 50
OUTAGE_H = 72


def build_config(folder: Path, url: str) -> Config:
    settings: dict[str, dict[str, Any]] = {
        "gateway": {
            "id": "gw-bench",
            "site": "bench",
            "data_dir": str(folder / "data"),
            "runtime_dir": str(folder / "run"),
        },
        "mqtt": {"enabled": False},
        "buffer": {"envelope_max_records": ENVELOPE_RECORDS},
        "influxdb": {
            "url": url,
            "org": "cgw",
            "bucket": "bench",
            "batch_records": 10_000,
            "flush_interval_s": 0.05,
        },
    }
    return parse(settings, folder / "gateway.toml")


def run(records: int, directory: Path | None = None, timeout_s: float = 1800) -> Report:
    deadline = Deadline(timeout_s)
    folder = Path(tempfile.mkdtemp(prefix="cgw-bench-influx-", dir=directory))
    try:
        with VictoriaMetrics(folder / "victoria") as server:
            config = build_config(folder, server.url)
            envelopes, _ = prepare_backlog(config, records, deadline)
            buffer = open_buffer(config)
            bodies = [item.body for item in buffer.after(0, records)]
            buffer.close()

            started = time.perf_counter()
            lines = [line for body in bodies for line in envelope_lines(body)[0]]
            encode_s = time.perf_counter() - started

            writer = HttpWriter(config.influxdb)
            started = time.perf_counter()
            for i in range(0, len(lines), CHUNK_LINES):
                deadline.check("the baseline's writes")
                writer.write(lines[i : i + CHUNK_LINES])
            baseline_s = time.perf_counter() - started
            writer.close()

            buffer = open_buffer(config)
            sink = InfluxSink(config.influxdb, buffer)
            sink.start()
            started = time.perf_counter()
            while sink.cursor < buffer.last_seq:
                deadline.check(f"the sink's drain (at seq {sink.cursor} of {buffer.last_seq})")
                if not sink.pump(buffer):
                    time.sleep(0.001)
            sink_s = time.perf_counter() - started
            sink.stop(buffer)
            state = sink.state
            buffer.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if state.points_written != len(lines) or state.rejected_points:
        raise RuntimeError(
            f"the sink wrote {state.points_written} points ({state.rejected_points} refused), "
            f"the baseline {len(lines)}"
        )
    sink_rate, baseline_rate = records / sink_s, records / baseline_s
    site_rate = SITE_METERS  # records a second: 50 meters polled every second
    backlog = site_rate * OUTAGE_H * 3600
    report = Report("influx", f"InfluxDB sink: {records:,} records to VictoriaMetrics")
    report.add("encode_records_per_s", "line protocol encoding", records / encode_s, "records/s")
    report.add(
        "baseline_records_per_s", "baseline: pre-encoded lines posted", baseline_rate, "records/s"
    )
    report.add("sink_records_per_s", "InfluxSink drain", sink_rate, "records/s")
    report.add("sink_vs_baseline", "sink / baseline", ratio(sink_rate, baseline_rate), "x")
    report.add(
        "catch_up_h",
        f"{OUTAGE_H} h backlog of {SITE_METERS} meters at 1 s",
        backlog / sink_rate / 3600,
        "h",
    )
    report.details = {
        "records": records,
        "envelopes": envelopes,
        "points": len(lines),
        "points_per_record": len(lines) / records,
        "seconds": {"encode": encode_s, "baseline": baseline_s, "sink": sink_s},
    }
    return report
