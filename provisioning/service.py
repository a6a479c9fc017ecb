"""The systemd unit: installed from the package (or the repository) and enabled.

`systemctl enable` does one thing for this unit: a link in each `<target>.wants/` of its
[Install] WantedBy=. Under --root that link is made directly; on the running system systemctl does it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, ensure_file, ensure_symlink
from provisioning.target import ROOT, Target

DEFAULT_WANTED_BY = ("multi-user.target",)


def unit_candidates() -> list[Path]:
    """Installed package data (the wheel's share/cgw/systemd), then the source tree."""
    return [
        Path(sys.prefix) / "share" / "cgw" / "systemd" / layout.UNIT_NAME,
        Path(__file__).resolve().parent.parent / "systemd" / layout.UNIT_NAME,
    ]


def find_unit(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit is not None else unit_candidates()
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ProvisionError(
        f"no {layout.UNIT_NAME} to install (looked at {tried}): reinstall cgw or give --unit-file",
        Exit.SYSTEM,
    )


def wanted_by(unit_text: str) -> tuple[str, ...]:
    """The targets of the unit's [Install] WantedBy= (multi-user.target if it names none)."""
    section = ""
    targets: list[str] = []
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Install" and line.startswith("WantedBy="):
            targets.extend(line.removeprefix("WantedBy=").split())
    return tuple(dict.fromkeys(targets)) or DEFAULT_WANTED_BY


def _systemd_running(target: Target) -> bool:
    return (
        target.root is None
        and shutil.which("systemctl") is not None
        and Path("/run/systemd/system").is_dir()
    )


def _systemctl(target: Target, *args: str) -> None:
    if target.dry_run:
        return
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit status {done.returncode}"
        raise ProvisionError(f"systemctl {' '.join(args)} failed: {message}", Exit.SYSTEM)


def ensure_service(target: Target, source: Path, enable: bool) -> list[Change]:
    content = source.read_bytes()
    unit = target.path(layout.UNIT)
    changes = [ensure_file(target, unit, content, 0o644, ROOT)]
    if changes[0].changed and _systemd_running(target):
        _systemctl(target, "daemon-reload")
    if not enable:
        return changes
    links = [
        target.path(f"{layout.UNIT_DIR}/{t}.wants/{layout.UNIT_NAME}")
        for t in wanted_by(content.decode("utf-8", "replace"))
    ]
    if _systemd_running(target):
        missing = [link for link in links if not link.is_symlink()]
        if missing:
            _systemctl(target, "enable", layout.UNIT_NAME)
        changes.extend(
            Change(link, "created" if link in missing else "unchanged") for link in links
        )
        return changes
    changes.extend(ensure_symlink(target, link, layout.UNIT) for link in links)
    return changes
