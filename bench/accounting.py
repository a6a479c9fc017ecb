"""Accounting: snapshots through the ledger per second, next to the ingest path in the same run.

Product path, as the daemon runs it: `Accounting.observe(batch)` for each poll cycle's batch (every
meter's counter into its tracker, segments into interval cells, limit alarms), and a checkpoint
(`Buffer.commit_with(accounting.checkpoint)`: cells and state saved, closed intervals and their
roll-ups published) every 60 s of reading time. Each of the 50 SDM630 meters has its import
counter accounted and a power limit; they are polled every 10 s of reading time, so intervals,
hours and days close during the run. Baseline: the ingest product path (`bench.ingest.product_run`)
on the same snapshots, batch 500: accounting keeps up when the ratio is at least 1.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from bench.common import Deadline, Report, ratio
from bench.ingest import product_run
from bench.workload import snapshots
from buffer.store import Buffer
from drivers.snapshot import Snapshot
from gateway.accounting.service import Accounting
from gateway.clock import ClockWatch
from gateway.config import parse

BATCH = 500
CHECKPOINT_EVERY_MS = 60_000
CYCLE_MS = 10_000  # reading time between two polls of a meter: 200,000 snapshots are 11 h


def metered(items: Sequence[Snapshot], meters: int) -> list[Snapshot]:
    """The workload's snapshots with counters that only grow (its value pool repeats) and a poll
    cycle every CYCLE_MS, so that intervals, hours and days close during the run."""
    out = []
    for i, s in enumerate(items):
        cycle = i // meters
        values = {**s.values, "active_energy_import_kwh": 1000.0 + cycle * 0.125}
        out.append(Snapshot(s.device, s.ts_ms + cycle * (CYCLE_MS - 1000), s.quality, values))
    return out


def config_text(meters: int) -> str:
    devices = "".join(
        f'[[devices]]\nid = "meter-{i:02d}"\nbus = "lan"\nunit = {i}\nprofile = "eastron_sdm630"\n'
        f"interval_s = 1\n"
        for i in range(1, meters + 1)
    )
    accounted = "".join(
        f'[[accounting.meters]]\ndevice = "meter-{i:02d}"\nrole = "load"\n'
        f'[[accounting.limits]]\ndevice = "meter-{i:02d}"\nquantity = "active_power_w"\n'
        f"above = 250000\nhysteresis = 5000\nfor_s = 300\n"
        for i in range(1, meters + 1)
    )
    return (
        '[gateway]\nid = "gw-bench"\nsite = "bench"\ntimezone = "Asia/Shanghai"\nclock = "trusted"\n'
        '[mqtt]\nenabled = false\n[[buses]]\nid = "lan"\ntype = "tcp"\nhost = "127.0.0.1"\n'
        f"{devices}[accounting]\n{accounted}"
    )


def checkpoint(buffer: Buffer, accounting: Accounting, wall_ms: int) -> dict[str, Sequence[bytes]]:
    """As the daemon does: results committed with the ledger state; returns what was published."""
    saved: dict[str, Sequence[bytes]] = {}

    def work(db: sqlite3.Connection) -> dict[str, Sequence[bytes]]:
        saved.update(accounting.checkpoint(db, wall_ms))
        return saved

    buffer.commit_with(work)
    return saved


def accounting_run(items: Sequence[Snapshot], folder: Path, meters: int) -> tuple[float, int]:
    """Seconds to account `items`, and the result records published."""
    config = parse(tomllib.loads(config_text(meters)), folder / "gateway.toml")
    buffer = Buffer(folder / "buffer.db", gateway="gw-bench", site="bench")
    accounting = Accounting(
        config.accounting, config.timezone, buffer.db, ClockWatch(assume_synced=True)
    )
    published = 0
    next_checkpoint = items[0].ts_ms + CHECKPOINT_EVERY_MS
    started = time.perf_counter()
    for first in range(0, len(items), BATCH):
        batch = items[first : first + BATCH]
        accounting.observe(batch)
        wall_ms = batch[-1].ts_ms
        if wall_ms >= next_checkpoint:
            next_checkpoint = wall_ms + CHECKPOINT_EVERY_MS
            saved = checkpoint(buffer, accounting, wall_ms)
            published += len(saved.get("intervals", ()))
    seconds = time.perf_counter() - started
    buffer.close()
    return seconds, published


def run(size: int, repeat: int, directory: Path | None = None, meters: int = 50) -> Report:
    deadline = Deadline(900.0)
    report = Report("accounting", f"accounting: {size:,} SDM630 snapshots of {meters} meters")
    runs: list[tuple[float, float, int]] = []
    for _ in range(repeat):
        deadline.check("accounting runs")
        items = metered(snapshots(size, meters), meters)  # fresh: observe() may flag them
        with tempfile.TemporaryDirectory(prefix="cgw-bench-", dir=directory) as folder:
            ingest_s = product_run(items, BATCH, Path(folder)).seconds
        with tempfile.TemporaryDirectory(prefix="cgw-bench-", dir=directory) as folder:
            seconds, published = accounting_run(items, Path(folder), meters)
        runs.append((seconds, ingest_s, published))
    seconds, ingest_s, published = sorted(runs)[len(runs) // 2]
    rate, ingest_rate = size / seconds, size / ingest_s
    report.details.update(
        snapshots=size,
        meters=meters,
        repeat=repeat,
        runs=[{"accounting_s": a, "ingest_s": i, "published": p} for a, i, p in runs],
    )
    report.add("accounting_per_s", "accounting: snapshots/s", rate, "/s")
    report.add("ingest_per_s", "ingest (batch 500), same snapshots: snapshots/s", ingest_rate, "/s")
    report.add("ratio", "ratio accounting/ingest (>= 1 keeps up)", ratio(rate, ingest_rate))
    report.add("us_per_snapshot", "  accounting per snapshot", seconds / size * 1e6, "us")
    report.add("published", "  interval result records published", published)
    return report
