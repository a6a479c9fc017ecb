"""The MQTT password file, when the inventory gives the gateway an MQTT user name.

The password never goes into the inventory: it comes from --mqtt-password-file (installed as
/etc/cgw/mqtt.password, 0640 root:cgw) or is already on the device.
"""

from __future__ import annotations

from pathlib import Path

from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, install_given
from provisioning.inventory import Entry
from provisioning.target import Ids, Target


def password_source(target: Target, entry: Entry, given: Path | None) -> Path | None:
    """Where the password is read from now; None if the row has no MQTT user name."""
    if entry.mqtt_username is None:
        return None
    if given is not None:
        try:
            if not given.read_text(encoding="utf-8").strip():
                raise ProvisionError(f"--mqtt-password-file {given}: the file is empty", Exit.USAGE)
        except (OSError, UnicodeDecodeError) as exc:
            raise ProvisionError(
                f"--mqtt-password-file {given}: cannot read: {exc}", Exit.USAGE
            ) from None
        return given
    installed = target.path(layout.MQTT_PASSWORD)
    if installed.is_file():
        return installed
    raise ProvisionError(
        f"{entry.where}: gateway {entry.gateway_id} logs in as {entry.mqtt_username!r}, but there "
        f"is no {installed}: give its password with --mqtt-password-file FILE",
        Exit.USAGE,
    )


def ensure_password(target: Target, entry: Entry, given: Path | None, owner: Ids) -> Change | None:
    source = password_source(target, entry, given)
    if source is None:
        return None
    content = source.read_text(encoding="utf-8").strip() + "\n"
    installed = target.path(layout.MQTT_PASSWORD)
    return install_given(target, source, installed, content.encode("utf-8"), 0o640, owner)
