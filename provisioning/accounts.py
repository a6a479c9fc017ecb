"""The service user `cgw` and its groups.

On the running system this uses groupadd, useradd and usermod. Under --root it edits the tree's
own etc/passwd, group, shadow (and gshadow if present), creating minimal ones if absent, so the
tree can become a device image without anything outside it being touched.
"""

from __future__ import annotations

import grp
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import make_parents, write_atomic
from provisioning.target import ROOT, Ids, Target

SYSTEM_IDS = range(999, 99, -1)  # Debian's system range, allocated from the top like useradd
DIALOUT_GID = 20  # Debian's fixed gid for dialout


@dataclass(frozen=True)
class Accounts:
    action: str  # "created", "updated" or "unchanged"
    ids: Ids | None  # None only in a dry run on the running system before the user exists
    notes: tuple[tuple[str, str], ...]  # (verb, what): ("create", "user cgw (uid 999)")

    def describe(self, dry_run: bool) -> str:
        if self.action == "unchanged":
            ids = f"uid {self.ids.uid}, gid {self.ids.gid}; " if self.ids else ""
            groups = ", ".join(layout.SUPPLEMENTARY_GROUPS)
            return f"unchanged {layout.USER} ({ids}groups {groups})"
        by_verb: dict[str, list[str]] = {}
        for verb, what in self.notes:
            by_verb.setdefault(verb, []).append(what)
        text = "; ".join(
            f"{'would ' + verb if dry_run else PAST[verb]} {', '.join(whats)}"
            for verb, whats in by_verb.items()
        )
        return text or f"{'would rewrite' if dry_run else 'rewrote'} the account files"


PAST = {"create": "created", "add": "added", "set": "set"}


class ColonFile:
    """One of passwd, group, shadow, gshadow: lines of ':'-separated fields, name first."""

    def __init__(self, path: Path, minimal: list[str], mode: int) -> None:
        self.path = path
        self.mode = mode
        self.owner: Ids | None = ROOT
        if path.exists():
            self.original: str | None = path.read_text(encoding="utf-8")
            self.lines = self.original.splitlines()
            st = path.stat()
            self.mode, self.owner = st.st_mode & 0o7777, Ids(st.st_uid, st.st_gid)
        else:
            self.original = None
            self.lines = list(minimal)

    def find(self, name: str) -> list[str] | None:
        for line in self.lines:
            fields = line.split(":")
            if fields[0] == name and not line.startswith("#"):
                return fields
        return None

    def put(self, fields: list[str]) -> None:
        line = ":".join(fields)
        for i, old in enumerate(self.lines):
            if old.split(":")[0] == fields[0] and not old.startswith("#"):
                self.lines[i] = line
                return
        self.lines.append(line)

    def ids(self) -> set[int]:
        found = set()
        for line in self.lines:
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                found.add(int(fields[2]))
        return found

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    def save(self, target: Target) -> bool:
        text = self.text()
        if text == self.original:
            return False
        if not target.dry_run:
            make_parents(target, self.path)
            write_atomic(self.path, text.encode(), self.mode, target.owner(self.owner))
        return True


def _free(used: set[int], also_free_in: set[int] | None = None, prefer: int | None = None) -> int:
    if (
        prefer is not None
        and prefer not in used
        and (also_free_in is None or prefer not in also_free_in)
    ):
        return prefer
    for n in SYSTEM_IDS:
        if n not in used and (also_free_in is None or n not in also_free_in):
            return n
    raise ProvisionError(
        "no free system uid/gid below 1000 in the tree's passwd/group", Exit.SYSTEM
    )


def _add_member(fields: list[str], index: int, user: str) -> bool:
    while len(fields) <= index:
        fields.append("")
    members = [m for m in fields[index].split(",") if m]
    if user in members:
        return False
    fields[index] = ",".join([*members, user])
    return True


def ensure_in_tree(target: Target) -> Accounts:
    """Edit the tree's account files (--root)."""
    passwd = ColonFile(target.path("/etc/passwd"), ["root:x:0:0:root:/root:/bin/bash"], 0o644)
    group = ColonFile(target.path("/etc/group"), ["root:x:0:"], 0o644)
    shadow = ColonFile(target.path("/etc/shadow"), ["root:*:::::::"], 0o640)
    gshadow_path = target.path("/etc/gshadow")
    gshadow = ColonFile(gshadow_path, [], 0o640) if gshadow_path.exists() else None
    notes: list[tuple[str, str]] = []
    user = passwd.find(layout.USER)
    own_group = group.find(layout.GROUP)
    if own_group is not None:
        gid = int(own_group[2])
    else:
        prefer = int(user[2]) if user is not None else None
        gid = _free(group.ids(), None if user else passwd.ids(), prefer)
        group.put([layout.GROUP, "x", str(gid), ""])
        if gshadow is not None:
            gshadow.put([layout.GROUP, "!", "", ""])
        notes.append(("create", f"group {layout.GROUP} (gid {gid})"))
    wanted_home = [layout.GECOS, layout.HOME, layout.SHELL]
    if user is None:
        uid = _free(passwd.ids(), None, gid)
        passwd.put([layout.USER, "x", str(uid), str(gid), *wanted_home])
        notes.insert(0, ("create", f"user {layout.USER} (uid {uid})"))
    else:
        uid = int(user[2])
        fixed = [*user[:3], str(gid), user[4] if len(user) > 4 else layout.GECOS, *wanted_home[1:]]
        if fixed != user:
            passwd.put(fixed)
            notes.append(
                ("set", f"{layout.USER}'s group, home {layout.HOME} and shell {layout.SHELL}")
            )
    if shadow.find(layout.USER) is None:
        shadow.put([layout.USER, "!", "", "", "", "", "", "", ""])
        if user is not None:
            notes.append(("add", f"a locked shadow entry for {layout.USER}"))
    added = []
    for name in layout.SUPPLEMENTARY_GROUPS:
        fields = group.find(name)
        if fields is None:
            prefer = DIALOUT_GID if name == "dialout" else None
            new_gid = _free(group.ids(), None, prefer)
            fields = [name, "x", str(new_gid), ""]
            notes.append(("create", f"group {name} (gid {new_gid})"))
            if gshadow is not None:
                gshadow.put([name, "!", "", ""])
        if _add_member(fields, 3, layout.USER):
            added.append(name)
        group.put(fields)
        if gshadow is not None:
            shadow_fields = gshadow.find(name) or [name, "!", "", ""]
            if _add_member(shadow_fields, 3, layout.USER):
                gshadow.put(shadow_fields)
    if added:
        notes.append(("add", f"{layout.USER} to {', '.join(added)}"))
    files = [passwd, group, shadow, *([gshadow] if gshadow is not None else [])]
    changed = [f.save(target) for f in files]
    action = "created" if user is None else ("updated" if any(changed) else "unchanged")
    return Accounts(action, Ids(uid, gid), tuple(notes))


def _run(target: Target, argv: list[str]) -> None:
    if target.dry_run:
        return
    if shutil.which(argv[0]) is None:
        raise ProvisionError(
            f"{argv[0]} is not installed: cannot manage the service user", Exit.SYSTEM
        )
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit status {done.returncode}"
        raise ProvisionError(f"{' '.join(argv)} failed: {message}", Exit.SYSTEM)


def _group(name: str) -> grp.struct_group | None:
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def ensure_on_system(target: Target) -> Accounts:
    """The running system: groupadd, useradd, usermod (as root)."""
    notes: list[tuple[str, str]] = []
    existed = _user(layout.USER) is not None
    for name in (layout.GROUP, *layout.SUPPLEMENTARY_GROUPS):
        if _group(name) is None:
            _run(target, ["groupadd", "--system", name])
            notes.append(("create", f"group {name}"))
    user = _user(layout.USER)
    if user is None:
        _run(
            target,
            [
                "useradd", "--system", "--gid", layout.GROUP, "--home-dir", layout.HOME,
                "--no-create-home", "--shell", layout.SHELL, "--comment", layout.GECOS, layout.USER,
            ],
        )  # fmt: skip
        notes.insert(0, ("create", f"user {layout.USER}"))
    elif (user.pw_dir, user.pw_shell) != (layout.HOME, layout.SHELL):
        _run(target, ["usermod", "--home", layout.HOME, "--shell", layout.SHELL, layout.USER])
        notes.append(("set", f"{layout.USER}'s home {layout.HOME} and shell {layout.SHELL}"))
    missing = [
        g
        for g in layout.SUPPLEMENTARY_GROUPS
        if (entry := _group(g)) is None or layout.USER not in entry.gr_mem
    ]
    if missing:
        _run(target, ["usermod", "--append", "--groups", ",".join(missing), layout.USER])
        notes.append(("add", f"{layout.USER} to {', '.join(missing)}"))
    user = _user(layout.USER)
    ids = Ids(user.pw_uid, user.pw_gid) if user is not None else None
    action = "created" if not existed else ("updated" if notes else "unchanged")
    return Accounts(action, ids, tuple(notes))


def ensure_service_user(target: Target) -> Accounts:
    return ensure_in_tree(target) if target.root is not None else ensure_on_system(target)
