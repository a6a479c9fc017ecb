"""The system being provisioned: the real one, or a tree under --root that stands for it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ids:
    """A numeric owner: uid and gid as the target's own passwd and group files give them."""

    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


ROOT = Ids(0, 0)


@dataclass(frozen=True)
class Target:
    root: Path | None  # None: the running system
    dry_run: bool = False

    def path(self, system_path: str) -> Path:
        """Where a path of the device is: itself, or the same path under --root."""
        if self.root is None:
            return Path(system_path)
        return self.root / system_path.lstrip("/")

    @property
    def chown(self) -> bool:
        """Ownership can be set (and is compared) only when running as root."""
        return os.geteuid() == 0

    def owner(self, ids: Ids | None) -> Ids | None:
        return ids if self.chown else None
