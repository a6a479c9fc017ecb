"""Stable names for USB-RS485 adapters: the shipped udev rules and the inventory's shorthand."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources

from provisioning import layout
from provisioning.files import Change, ensure_file
from provisioning.target import ROOT, Target

RULES_NAME = "70-cgw-rs485.rules"
USB_SOCKET = re.compile(r"^\d+-\d+(\.\d+)*$")  # the kernel's name of a USB port: 1-1.3
ADAPTER_SERIAL = re.compile(r"^[A-Za-z0-9#+.:=@_-]+$")  # what udev keeps of a serial in a name


def stable_port(port: str) -> str:
    """`usb:1-1.3` -> /dev/rs485-usb-1-1.3, `serial:A10KZP3B` -> /dev/rs485-A10KZP3B, a path as is."""
    if port.startswith("/"):
        return port
    kind, _, name = port.partition(":")
    if kind == "usb" and USB_SOCKET.match(name):
        return f"/dev/rs485-usb-{name}"
    if kind == "serial" and ADAPTER_SERIAL.match(name):
        return f"/dev/rs485-{name}"
    raise ValueError(
        f"port {port!r}: give a device path (/dev/ttyAMA0), usb:SOCKET (usb:1-1.3) "
        "or serial:SERIAL (serial:A10KZP3B)"
    )


def rules() -> bytes:
    return resources.files("provisioning").joinpath("udev", RULES_NAME).read_bytes()


def _reload(target: Target) -> None:
    """On the running system, make udev read the rules and name adapters already plugged in."""
    if target.root is not None or target.dry_run or shutil.which("udevadm") is None:
        return
    for argv in (
        ["udevadm", "control", "--reload"],
        ["udevadm", "trigger", "--subsystem-match=tty", "--subsystem-match=gpio", "--action=add"],
    ):
        subprocess.run(argv, capture_output=True, check=False)


def ensure_rules(target: Target) -> Change:
    path = target.path(f"{layout.UDEV_RULES_DIR}/{RULES_NAME}")
    change = ensure_file(target, path, rules(), 0o644, ROOT)
    if change.changed:
        _reload(target)
    return change
