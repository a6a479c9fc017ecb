"""Files, directories and links made to be right: compared first, written atomically, only if needed.

Nothing is touched when it is already right, so a second run keeps every mtime. In a dry run the
same comparison says what would change and nothing is written.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import Exit, ProvisionError
from provisioning.target import Ids, Target


@dataclass(frozen=True)
class Change:
    path: Path
    action: str  # "created", "updated" or "unchanged"
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"


def _fail(path: Path, what: str, exc: OSError) -> ProvisionError:
    return ProvisionError(f"{path}: cannot {what}: {exc.strerror or exc}", Exit.SYSTEM)


def _attr_changes(st: os.stat_result, mode: int, owner: Ids | None) -> list[str]:
    changes = []
    if stat.S_IMODE(st.st_mode) != mode:
        changes.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
    if owner is not None and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        changes.append(f"owner {st.st_uid}:{st.st_gid} -> {owner}")
    return changes


def _set_attrs(path: Path, mode: int, owner: Ids | None) -> None:
    try:
        if owner is not None:
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
        os.chmod(path, mode)
    except OSError as exc:
        raise _fail(path, "set its mode and owner", exc) from None


def make_parents(target: Target, path: Path) -> None:
    """Missing parent folders (/etc, /var/lib, …) are made 0755 and left to their owner."""
    if target.dry_run or path.parent.is_dir():
        return
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(path.parent, "create it", exc) from None


def ensure_dir(target: Target, path: Path, mode: int, owner: Ids | None) -> Change:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ProvisionError(f"{path}: exists and is not a folder; move it away", Exit.SYSTEM)
    if path.exists():
        return ensure_attrs(target, path, mode, owner)
    if not target.dry_run:
        make_parents(target, path)
        try:
            path.mkdir(mode=0o700)
        except OSError as exc:
            raise _fail(path, "create it", exc) from None
        _set_attrs(path, mode, target.owner(owner))
    return Change(path, "created")


def write_atomic(path: Path, content: bytes, mode: int, owner: Ids | None) -> None:
    """Write a temporary file beside `path` (created with `mode`), fsync it, rename it over."""
    tmp = path.with_name(f".{path.name}.cgw-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode & 0o700)
        try:
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
            os.fchmod(fd, mode)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(path, "write it", exc) from None


def ensure_file(target: Target, path: Path, content: bytes, mode: int, owner: Ids | None) -> Change:
    """`path` holds exactly `content` with `mode` and `owner`."""
    owner = target.owner(owner)
    if not path.exists():
        if not target.dry_run:
            make_parents(target, path)
            write_atomic(path, content, mode, owner)
        return Change(path, "created")
    try:
        same = path.read_bytes() == content
    except OSError as exc:
        raise _fail(path, "read it", exc) from None
    if not same:
        if not target.dry_run:
            write_atomic(path, content, mode, owner)
        return Change(path, "updated", "content")
    return ensure_attrs(target, path, mode, owner)


def ensure_attrs(target: Target, path: Path, mode: int, owner: Ids | None) -> Change:
    """An existing file has `mode` and `owner` (its content is not ours to write)."""
    owner = target.owner(owner)
    changes = _attr_changes(path.stat(), mode, owner)
    if not changes:
        return Change(path, "unchanged")
    if not target.dry_run:
        _set_attrs(path, mode, owner)
    return Change(path, "updated", ", ".join(changes))


def ensure_symlink(target: Target, path: Path, points_to: str) -> Change:
    if path.is_symlink() and os.readlink(path) == points_to:
        return Change(path, "unchanged")
    action = "updated" if path.is_symlink() or path.exists() else "created"
    if not target.dry_run:
        make_parents(target, path)
        tmp = path.with_name(f".{path.name}.cgw-tmp")
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(points_to, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise _fail(path, "create the link", exc) from None
    return Change(path, action, f"-> {points_to}")


def move_aside(target: Target, path: Path, new_path: Path) -> Change:
    if not target.dry_run:
        try:
            os.replace(path, new_path)
        except OSError as exc:
            raise _fail(path, f"move it to {new_path}", exc) from None
    return Change(path, "updated", f"moved to {new_path}")


def describe(changes: list[Change], dry_run: bool) -> str:
    """'created a, b; updated c (mode 0644 -> 0600)' or 'unchanged a, b'."""
    groups: dict[str, list[str]] = {}
    for c in changes:
        text = f"{c.path} ({c.detail})" if c.detail else str(c.path)
        groups.setdefault(c.action, []).append(text)
    if set(groups) == {"unchanged"}:
        return "unchanged " + ", ".join(groups["unchanged"])
    parts = []
    for action in ("created", "updated"):
        if action in groups:
            verb = f"would {'create' if action == 'created' else 'update'}" if dry_run else action
            parts.append(f"{verb} {', '.join(groups[action])}")
    if "unchanged" in groups:
        parts.append(f"unchanged {', '.join(groups['unchanged'])}")
    return "; ".join(parts)


def install_given(
    target: Target, source: Path, installed: Path, content: bytes, mode: int, owner: Ids | None
) -> Change:
    """A file given to provisioning (`content`, read from `source`) installed at `installed`; when
    it is the installed one already, only its mode and owner are seen to."""
    if source == installed:
        return ensure_attrs(target, installed, mode, owner)
    return ensure_file(target, installed, content, mode, owner)
