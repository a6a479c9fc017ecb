"""The drain as the product runs it: the real daemon (`cgw run`, a subprocess) finding a backlog.

The daemon starts on a copy of the prepared backlog with no meters, so its main loop steps at its
idle pace (one `pump` per STEP_S); the backlog is read from the database (read-only) until every
envelope is delivered. Timed from the daemon's start-up being over (its first status file). Its
peak resident memory (VmHWM) is kept too: paho holds every in-flight envelope in memory.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.common import Children, Deadline
from bench.processes import proc_status, start_daemon
from bench.subscriber import Platform
from gateway.config import Config

POLL_S = 0.05


def toml_text(tables: dict[str, dict[str, Any]]) -> str:
    """TOML for flat tables of strings and numbers (what the bench's settings hold)."""
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            text = f'"{value}"' if isinstance(value, str) else repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def undelivered(database: Path) -> int:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return int(
            db.execute("SELECT count(*) FROM envelopes WHERE delivered_ms IS NULL").fetchone()[0]
        )
    finally:
        db.close()


def daemon_drain(
    children: Children,
    config: Config,
    tables: dict[str, dict[str, Any]],
    records: int,
    platform: Platform,
    deadline: Deadline,
) -> dict[str, Any]:
    """Run `cgw run` on `config`'s folder (backlog and key already there) until it is drained."""
    folder = config.path.parent
    config.path.write_text(toml_text(tables), encoding="utf-8")
    platform.reset()
    launched = time.monotonic()
    daemon = start_daemon(children, folder, config.path)
    started = time.monotonic()
    database = config.data_dir / "buffer.db"
    while undelivered(database):
        deadline.check("the daemon draining its backlog")
        if daemon.poll() is not None:
            raise RuntimeError(
                f"the daemon exited (status {daemon.returncode}): see {folder}/daemon.log"
            )
        time.sleep(POLL_S)
    seconds = time.monotonic() - started
    peak_kb = proc_status(daemon.pid)["VmHWM"]  # the in-flight window's bodies are held in RAM
    children.stop(daemon, timeout_s=30)
    arrived = platform.wait_for(records, timeout_s=min(30.0, max(deadline.left(), 1.0)))
    return {
        "inflight": config.mqtt.inflight,
        "startup_s": started - launched,
        "seconds": seconds,
        "records": records,
        "records_per_s": records / seconds,
        "received_records": arrived["records"],
        "peak_rss_mb": peak_kb / 1024,
    }
