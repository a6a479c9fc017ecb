"""Memory: resident set of the real daemon (`cgw run`, a subprocess) polling 50 emulated meters.

The meters are served by `cgw emulate` processes, one Modbus TCP port per bus (several buses, as a
site with several RS-485 lines has), and the daemon publishes to a local Mosquitto. VmRSS and VmHWM
are sampled from /proc while it runs, with its CPU time and its writes (SD-card wear).

Baselines, same run: a bare `python -c "import time; time.sleep(...)"`, and a process that only
imports the daemon's modules.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Children, Deadline, Report, python, ratio
from bench.processes import (
    cpu_seconds,
    proc_io,
    proc_status,
    read_status,
    start_daemon,
    start_emulators,
    wait_line,
    write_config,
)
from bench.workload import prepare_backlog
from gateway.config import load
from gateway.localbroker import LocalBroker

TARGET_MB = 60.0
IMPORTS = "import gateway.cli, gateway.daemon, gateway.config"


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_kb: int
    hwm_kb: int
    cpu_s: float
    write_bytes: int  # reached the block layer (what wears the card)
    wchar: int  # handed to write(2)


def sample(pid: int, started: float) -> Sample:
    status, io = proc_status(pid), proc_io(pid)
    return Sample(
        t_s=time.monotonic() - started,
        rss_kb=status["VmRSS"],
        hwm_kb=status["VmHWM"],
        cpu_s=cpu_seconds(pid),
        write_bytes=io.get("write_bytes", -1),
        wchar=io.get("wchar", -1),
    )


def idle_rss_kb(children: Children, code: str, settle_s: float) -> int:
    """RSS of `python -c code` once it has printed `ready` and settled."""
    process = children.start([python(), "-c", code], stdout=subprocess.PIPE, bufsize=0)
    wait_line(process, "ready", 60)
    time.sleep(settle_s)
    rss = proc_status(process.pid)["VmRSS"]
    children.stop(process)
    return rss


def slope_mb_per_min(samples: list[Sample]) -> float:
    """Least-squares trend of RSS over the samples, in MB per minute."""
    if len(samples) < 3:
        return 0.0
    xs = [s.t_s for s in samples]
    ys = [s.rss_kb / 1024 for s in samples]
    return statistics.linear_regression(xs, ys).slope * 60


@dataclass(frozen=True)
class Observation:
    samples: list[Sample]
    status_before: dict[str, Any]  # status.json when sampling began
    status_after: dict[str, Any]  # and when it ended


def observe(
    daemon: subprocess.Popen[bytes],
    status_file: Path,
    duration_s: float,
    every_s: float,
    deadline: Deadline,
) -> Observation:
    started = time.monotonic()
    samples = [sample(daemon.pid, started)]
    before = read_status(status_file)
    while samples[-1].t_s < duration_s:
        deadline.check("sampling the daemon")
        time.sleep(min(every_s, max(duration_s - samples[-1].t_s, 0.01)))
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited during the run (status {daemon.returncode})")
        samples.append(sample(daemon.pid, started))
    time.sleep(2.5)  # the daemon rewrites its status file every 2 s
    return Observation(samples, before, read_status(status_file))


def run(
    duration_s: float,
    meters: int = 50,
    buses: int = 5,
    interval_s: float = 1.0,
    every_s: float = 2.0,
    directory: Path | None = None,
    backlog: int = 0,
) -> Report:
    """With `backlog`, the daemon starts on that many sealed, undelivered records (an outage
    just ended): the samples show the drain's peak, then the steady state."""
    deadline = Deadline(duration_s + 300 + backlog / 10_000)
    title = f"memory: daemon polling {meters} emulated meters on {buses} buses"
    report = Report("memory", title + (f", {backlog:,} records of backlog" if backlog else ""))
    with (
        tempfile.TemporaryDirectory(prefix="cgw-bench-", dir=directory) as tmp,
        Children() as children,
        LocalBroker(workdir=Path(tmp)) as broker,
    ):
        folder = Path(tmp)
        sleep = "import time; print('ready', flush=True); time.sleep(600)"
        bare_kb = idle_rss_kb(children, sleep, 1.0)
        imports_kb = idle_rss_kb(children, f"{IMPORTS}; {sleep}", 1.0)
        ports = start_emulators(children, meters, buses, folder)
        config = write_config(folder, ports, meters, broker.port, interval_s)
        if backlog:
            prepare_backlog(load(config), backlog, deadline)
        daemon = start_daemon(children, folder, config)
        seen = observe(daemon, folder / "run" / "status.json", duration_s, every_s, deadline)
        children.stop(daemon, timeout_s=30)
        log_tail = (folder / "daemon.log").read_text(encoding="utf-8", errors="replace")[-2000:]
    report.details.update(
        meters=meters,
        buses=buses,
        interval_s=interval_s,
        duration_s=duration_s,
        backlog_records=backlog,
        samples=[s.__dict__ for s in seen.samples],
        bare_python_kb=bare_kb,
        imports_only_kb=imports_kb,
        imports=IMPORTS,
        status=seen.status_after,
        daemon_log_tail=log_tail,
    )
    summarise(report, seen, bare_kb, imports_kb, duration_s, backlog)
    return report


def summarise(
    report: Report,
    seen: Observation,
    bare_kb: int,
    imports_kb: int,
    duration_s: float,
    backlog: int,
) -> None:
    first, last = seen.samples[0], seen.samples[-1]
    elapsed = last.t_s - first.t_s
    settled = [s for s in seen.samples if s.t_s >= duration_s / 3]
    span = settled[-1].t_s - settled[0].t_s
    rss_mb = last.rss_kb / 1024
    report.add("rss_mb", f"daemon VmRSS after {last.t_s:.0f} s", rss_mb, "MB")
    report.add("hwm_mb", "daemon VmHWM (peak)", last.hwm_kb / 1024, "MB")
    low, high = min(s.rss_kb for s in settled) / 1024, max(s.rss_kb for s in settled) / 1024
    report.add(
        "rss_range_mb",
        f"daemon VmRSS min / max over the last {span:.0f} s",
        f"{low:.1f} / {high:.1f}",
        "MB",
    )
    report.add(
        "rss_slope_mb_min",
        f"daemon VmRSS trend over the last {span:.0f} s",
        slope_mb_per_min(settled),
        "MB/min",
    )
    report.add("bare_mb", "baseline: bare python, VmRSS", bare_kb / 1024, "MB")
    report.add("imports_mb", "baseline: imports only, VmRSS", imports_kb / 1024, "MB")
    report.add("ratio_bare", "ratio daemon/bare python", ratio(last.rss_kb, bare_kb))
    report.add("ratio_imports", "ratio daemon/imports only", ratio(last.rss_kb, imports_kb))
    report.add("target_ratio", f"daemon vs target {TARGET_MB:.0f} MB", rss_mb / TARGET_MB)
    committed_per_s = committed_rate(seen.status_before, seen.status_after)
    devices = seen.status_after.get("devices", {})
    polls = sum(int(d.get("polls", 0)) for d in devices.values())
    failures = sum(int(d.get("failures", 0)) for d in devices.values())
    report.add("snapshots_per_s", "snapshots committed/s", committed_per_s, "/s")
    report.add("polls", "polls / failed polls (whole run)", f"{polls:,} / {failures:,}")
    cpu = (last.cpu_s - first.cpu_s) / elapsed * 100
    report.add("cpu_percent", "daemon CPU (one core = 100)", cpu, "%")
    if last.write_bytes < 0:
        return
    written = last.write_bytes - first.write_bytes
    report.add(
        "write_kb_per_s", "daemon writes reaching the disk", written / elapsed / 1024, "KB/s"
    )
    if backlog:  # the drain's writes (marking envelopes delivered) dominate: no per-day figure
        report.add("written_mb", "  in all, drain included", written / 1e6, "MB")
        return
    per_snapshot = ratio(written / elapsed, committed_per_s)
    report.add("write_bytes_per_snapshot", "  per committed snapshot", per_snapshot, "B")
    report.add("write_gb_per_day", "  per day at this rate", written / elapsed * 86400 / 1e9, "GB")


def committed_rate(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Snapshots committed per second between two status files."""
    seconds = (int(after["ts"]) - int(before["ts"])) / 1000
    committed = int(after["committed_records"]) - int(before["committed_records"])
    return committed / seconds if seconds > 0 else 0.0
