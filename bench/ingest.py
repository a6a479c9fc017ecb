"""Ingest: device snapshots canonicalised, committed and sealed per second, on a file database.

Product path, exactly as the daemon runs it: `canonical(snapshot.record())` for each snapshot,
`Buffer.commit("readings", ..., seal_with=...)` once per poll-cycle batch (whole envelopes' worth
are sealed in that transaction), and `Buffer.seal_pending` whenever a full envelope is pending.
Baseline: the same record bytes inserted with plain sqlite3 `executemany` into a one-column
table, one transaction per batch, same pragmas.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import Deadline, Report, ratio, written_bytes
from bench.workload import snapshots
from buffer.canonical import canonical
from buffer.keys import load_or_create
from buffer.store import Buffer
from drivers.snapshot import Snapshot

TARGET_PER_S = 100_000
ENVELOPE_RECORDS = 500
STREAM = "readings"


@dataclass(frozen=True)
class Run:
    seconds: float
    canonical_s: float
    commit_s: float
    seal_s: float
    bytes_written: int  # handed to write(2), checkpoints and the close included
    file_growth: int  # database + WAL size just before close
    envelopes: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def files_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def product_run(items: Sequence[Snapshot], batch: int, folder: Path) -> Run:
    signer, _ = load_or_create(folder / "signing.key")
    path = folder / "buffer.db"
    buffer = Buffer(path, gateway="gw-bench", site="bench", envelope_max_records=ENVELOPE_RECORDS)
    size_before, written_before = files_size(path), written_bytes()
    canonical_s = commit_s = seal_s = 0.0
    envelopes = 0
    started = time.perf_counter()
    for first in range(0, len(items), batch):
        t0 = time.perf_counter()
        records = [canonical(s.record()) for s in items[first : first + batch]]
        t1 = time.perf_counter()
        last_seq = buffer.last_seq
        if not buffer.commit(STREAM, records, seal_with=(signer, now_ms())):
            raise RuntimeError("the disk is full")
        envelopes += buffer.last_seq - last_seq  # sealed directly in the commit
        t2 = time.perf_counter()
        if buffer.pending_records >= ENVELOPE_RECORDS:
            envelopes += len(buffer.seal_pending(signer, now_ms()))
        t3 = time.perf_counter()
        canonical_s, commit_s, seal_s = canonical_s + t1 - t0, commit_s + t2 - t1, seal_s + t3 - t2
    t3 = time.perf_counter()
    envelopes += len(buffer.seal_pending(signer, now_ms()))
    seal_s += time.perf_counter() - t3
    seconds = time.perf_counter() - started
    growth = files_size(path) - size_before
    buffer.close()
    return Run(
        seconds, canonical_s, commit_s, seal_s, written_bytes() - written_before, growth, envelopes
    )


def baseline_run(records: Sequence[bytes], batch: int, folder: Path) -> Run:
    path = folder / "plain.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE readings (record BLOB NOT NULL)")
    size_before, written_before = files_size(path), written_bytes()
    started = time.perf_counter()
    for first in range(0, len(records), batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO readings (record) VALUES (?)",
            ((r,) for r in records[first : first + batch]),
        )
        db.execute("COMMIT")
    seconds = time.perf_counter() - started
    growth = files_size(path) - size_before
    db.close()
    return Run(seconds, 0.0, seconds, 0.0, written_bytes() - written_before, growth, 0)


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def measure(
    items: Sequence[Snapshot],
    records: Sequence[bytes],
    batch: int,
    repeat: int,
    deadline: Deadline,
    directory: Path | None,
) -> tuple[list[Run], list[Run]]:
    """`repeat` product and baseline runs, interleaved so that noise on the machine hits both."""
    product: list[Run] = []
    baseline: list[Run] = []
    for _ in range(repeat):
        deadline.check(f"ingest runs of batch {batch}")
        with tempfile.TemporaryDirectory(prefix="cgw-bench-", dir=directory) as folder:
            baseline.append(baseline_run(records, batch, Path(folder)))
        with tempfile.TemporaryDirectory(prefix="cgw-bench-", dir=directory) as folder:
            product.append(product_run(items, batch, Path(folder)))
    return product, baseline


def summarise(
    report: Report, batch: int, product: list[Run], baseline: list[Run], size: int
) -> None:
    p, b = median_run(product), median_run(baseline)
    rate, base_rate = size / p.seconds, size / b.seconds
    split = {
        "canonical": p.canonical_s / size * 1e6,
        "commit": p.commit_s / size * 1e6,
        "seal": p.seal_s / size * 1e6,
        "baseline_insert": b.seconds / size * 1e6,
    }
    report.details["by_batch"][batch] = {
        "product_per_s": rate,
        "baseline_per_s": base_rate,
        "ratio": ratio(rate, base_rate),
        "product_runs_s": [r.seconds for r in product],
        "baseline_runs_s": [r.seconds for r in baseline],
        "us_per_snapshot": split,
        "bytes_written_per_snapshot": p.bytes_written / size,
        "file_growth_per_snapshot": p.file_growth / size,
        "baseline_bytes_written_per_snapshot": b.bytes_written / size,
        "baseline_file_growth_per_snapshot": b.file_growth / size,
        "envelopes": p.envelopes,
    }
    suffix = f" (batch {batch})"
    report.add(f"product_per_s_{batch}", "product: snapshots/s" + suffix, rate, "/s")
    report.add(f"baseline_per_s_{batch}", "baseline executemany/s" + suffix, base_rate, "/s")
    report.add(f"ratio_{batch}", "ratio product/baseline" + suffix, ratio(rate, base_rate))
    report.add(
        f"target_ratio_{batch}",
        f"product vs target {TARGET_PER_S:,}/s" + suffix,
        rate / TARGET_PER_S,
    )
    report.add(
        f"split_{batch}",
        "  canonical / commit / seal" + suffix,
        f"{split['canonical']:.2f} / {split['commit']:.2f} / {split['seal']:.2f}",
        "us/snapshot",
    )
    report.add(
        f"bytes_written_{batch}",
        "  bytes written/snapshot, product / baseline" + suffix,
        f"{p.bytes_written / size:,.0f} / {b.bytes_written / size:,.0f}",
        "B",
    )
    report.add(
        f"file_growth_{batch}",
        "  db+wal growth/snapshot, product / baseline" + suffix,
        f"{p.file_growth / size:,.0f} / {b.file_growth / size:,.0f}",
        "B",
    )


def run(
    size: int,
    batches: Sequence[int],
    repeat: int,
    directory: Path | None = None,
    time_limit_s: float = 900.0,
) -> Report:
    deadline = Deadline(time_limit_s)
    items = snapshots(size)
    records = [canonical(s.record()) for s in items]
    report = Report("ingest", f"ingest: {size:,} SDM630 snapshots, envelopes of {ENVELOPE_RECORDS}")
    report.details.update(
        snapshots=size,
        repeat=repeat,
        record_bytes_mean=statistics.fmean(len(r) for r in records),
        pragmas="journal_mode=WAL, synchronous=FULL",
        target_per_s=TARGET_PER_S,
        by_batch={},
    )
    for batch in batches:
        product, baseline = measure(items, records, batch, repeat, deadline, directory)
        summarise(report, batch, product, baseline, size)
    report.add(
        "record_bytes", "canonical record size (mean)", report.details["record_bytes_mean"], "B"
    )
    return report
