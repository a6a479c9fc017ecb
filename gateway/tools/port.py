"""Who else has a serial port open: the running gateway holds its buses' ports."""

from __future__ import annotations

import os
from pathlib import Path

# Programs that hold a pty's both ends by design (bridges for emulators and test rigs): not users.
PTY_BRIDGES = frozenset({"socat"})


class ToolError(Exception):
    """A problem the user can fix, with the exit status; `cgw` prints it as one line."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def port_holders(port: str) -> list[tuple[int, str]]:
    """(pid, command name) of the other processes that have `port` open (as far as /proc lets us
    see; processes of other users are invisible without root)."""
    try:
        target = os.stat(port).st_rdev
    except OSError:
        return []
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                st = fd.stat()
            except OSError:
                continue
            if st.st_rdev == target and (st.st_mode & 0o170000) == 0o020000:
                name = _command_name(proc)
                if name not in PTY_BRIDGES:
                    holders.append((int(proc.name), name))
                break
    return holders


def _command_name(proc: Path) -> str:
    try:
        return (proc / "comm").read_text(encoding="utf-8").strip()
    except OSError:
        return "?"


def busy_message(port: str, holders: list[tuple[int, str]]) -> str:
    who = ", ".join(f"{name} (pid {pid})" for pid, name in holders)
    return (
        f"serial port {port} is in use by {who}: if that is the gateway service, stop it first "
        "(sudo systemctl stop cgw) and start it again afterwards"
    )
