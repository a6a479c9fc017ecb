"""Disk space for the buffer: a reserve file that can be given back when the disk is full.

SQLite needs free space to free space: a checkpoint copies the WAL into the database file before the
WAL can shrink, and deleting rows writes to the WAL. On a completely full disk neither works, so the
buffer keeps a small reserve file beside it and deletes it in that moment, which lets the checkpoint
and the drop of the oldest data go through. The reserve is re-created once there is room again.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

RESERVE_BYTES = 2 * 1024 * 1024
_CHUNK = b"\0" * 65536


class SpaceGuard:
    def __init__(self, database: Path, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.folder = database.parent
        self.reserve = database.with_name(database.name + ".reserve")
        self.reserve_bytes = reserve_bytes

    def free_bytes(self) -> int:
        stat = os.statvfs(self.folder)
        return stat.f_bavail * stat.f_frsize

    def has_reserve(self) -> bool:
        return self.reserve.exists() and self.reserve.stat().st_size >= self.reserve_bytes

    def ensure_reserve(self) -> bool:
        """Create the reserve when it is missing and the disk has room for it and as much again."""
        if self.has_reserve():
            return True
        if self.free_bytes() < 2 * self.reserve_bytes:
            return False
        try:
            with self.reserve.open("wb") as f:
                for _ in range(self.reserve_bytes // len(_CHUNK)):
                    f.write(_CHUNK)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            self.release()
            return False
        return True

    def release(self) -> bool:
        """Give the reserve's space back. True if there was one."""
        with contextlib.suppress(FileNotFoundError):
            self.reserve.unlink()
            return True
        return False
