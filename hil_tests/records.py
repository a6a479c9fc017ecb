"""What a daemon's buffer holds, read the way the platform would see it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def buffered_records(db: Path) -> list[dict[str, Any]]:
    """Every record in the buffer, sealed or still pending, in time order."""
    with sqlite3.connect(db) as conn:
        pending = [json.loads(r) for (r,) in conn.execute("SELECT record FROM pending")]
        sealed = [
            r for (b,) in conn.execute("SELECT body FROM bodies") for r in json.loads(b)["records"]
        ]
    return sorted(pending + sealed, key=lambda r: int(r["ts"]))


def readings_of(records: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("device") == device and "quality" in r]
