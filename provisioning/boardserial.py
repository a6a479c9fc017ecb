"""This board's serial number, the key of its inventory row."""

from __future__ import annotations

from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.target import Target


def read_serial(target: Target) -> tuple[str, str]:
    """(serial, where it was read): the device tree's serial-number (a Raspberry Pi's), else
    /etc/machine-id. Under --root they are read in the tree."""
    for source in layout.SERIAL_SOURCES:
        path = target.path(source)
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        serial = raw.replace(b"\0", b"").decode("ascii", "replace").strip()
        if serial:
            return serial, str(path)
    tried = ", ".join(str(target.path(s)) for s in layout.SERIAL_SOURCES)
    raise ProvisionError(
        f"cannot tell this board's serial number (tried {tried}): give --serial SERIAL",
        Exit.SERIAL_UNKNOWN,
    )
