"""The RS-485 lines the scenarios run on, in either mode.

Emulated (the default): a socat pty pair stands for two cross-wired adapters, and the emulator
paces it to the baud rate (a pty's own baud rate is fiction). Unplugging stops socat: both device
paths vanish, as a pulled USB adapter's does, and come back under the same names.

Rig (`CGW_RIG_PORTS=FILE`): real adapters on this machine, wired to each other through the rig's
RS-485 bus; real ports pace themselves. The file names the ports on both sides:

    [[pairs]]
    emulator = "/dev/serial/by-id/usb-FTDI_A"   # where the emulated meters answer
    gateway = "/dev/serial/by-id/usb-FTDI_B"    # what the gateway under test opens
    # the gateway-side adapter's USB `authorized` switch, for the unplug scenario:
    usb_authorized = "/sys/bus/usb/devices/1-1.3/authorized"

Scenarios take `line_pair()` and never look at which mode they are in.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from drivers.emulation.server import EmulatorServer
from gateway.tomltable import ConfigError, Table, array
from tests.support.gateway import DaemonProcess
from tests.support.platform import wait_until
from tests.support.serial_pair import SocatPair, serial_pair

RIG_PORTS = "CGW_RIG_PORTS"


@dataclass
class LinePair:
    emulator: str
    gateway: str
    socat: SocatPair | None = None  # emulated mode
    usb_authorized: str | None = None  # rig mode
    _served: list[tuple[EmulatorServer, int]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "emulated" if self.socat is not None else "rig"

    def serve(self, server: EmulatorServer, baudrate: int = 9600) -> None:
        """Let `server`'s meters answer on the emulator side at `baudrate` (8N1)."""
        server.serve_serial(self.emulator, baudrate, baud_accurate=self.socat is not None)
        self._served.append((server, baudrate))

    def unplug(self) -> None:
        """The gateway's adapter is pulled out."""
        if self.socat is not None:
            self.socat.stop()
        else:
            self._authorize("0")
            wait_until(lambda: not os.path.exists(self.gateway), 10, f"{self.gateway} to vanish")

    def replug(self) -> None:
        """And plugged back in: the same device path comes back."""
        if self.socat is not None:
            self.socat.start()
            # Both ends were new ptys: the emulator side is opened again too.
            for server, baudrate in self._served:
                server.serve_serial(self.emulator, baudrate, baud_accurate=True)
        else:
            self._authorize("1")
            wait_until(lambda: os.path.exists(self.gateway), 10, f"{self.gateway} to come back")

    def _authorize(self, value: str) -> None:
        if self.usb_authorized is None:
            raise AssertionError(
                f"the unplug scenario needs usb_authorized (the gateway adapter's "
                f"/sys/bus/usb/devices/*/authorized) in the file {os.environ[RIG_PORTS]}"
            )
        Path(self.usb_authorized).write_text(value)


def rig_pairs(path: str) -> list[LinePair]:
    """The port pairs of a rig ports file; ConfigError naming the file and key otherwise."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    root = Table(path, "", data)
    pairs = []
    for table in array(root, "pairs"):
        pair = LinePair(
            emulator=table.get("emulator", str),
            gateway=table.get("gateway", str),
            usb_authorized=table.get("usb_authorized", str, None),
        )
        table.done()
        for side in ("emulator", "gateway"):
            if not os.path.exists(getattr(pair, side)):
                raise table.error(side, f"{getattr(pair, side)}: no such device")
        pairs.append(pair)
    root.done()
    if not pairs:
        raise root.error("pairs", "is required: at least one [[pairs]] with emulator and gateway")
    return pairs


@contextmanager
def line_pair() -> Iterator[LinePair]:
    """One line for a scenario: the rig's first pair, or a fresh emulated one."""
    path = os.environ.get(RIG_PORTS)
    if path:
        yield rig_pairs(path)[0]
        return
    with serial_pair() as socat:
        yield LinePair(emulator=str(socat.a), gateway=str(socat.b), socat=socat)


@contextmanager
def gateway_on_a_line(
    folder: Path, server: EmulatorServer, config_text: Callable[[str], str]
) -> Iterator[tuple[LinePair, DaemonProcess]]:
    """`server`'s meters on one end of a line, the real daemon on the other, its config written
    by `config_text(gateway_port)` into `folder`. The meters stop on the way out."""
    with line_pair() as line:
        line.serve(server)
        try:
            config = folder / "gateway.toml"
            config.write_text(config_text(line.gateway))
            yield line, DaemonProcess(config).start().wait_running()
        finally:
            server.stop()
