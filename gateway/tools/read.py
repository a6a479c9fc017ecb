"""`cgw read`: read one meter once and show what it says, or say why it does not answer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from drivers.dlt645.identifiers import Dlt645Device
from drivers.profile import load_shipped_profile
from drivers.snapshot import EXCEPTION, INVALID_RESPONSE, NO_CONNECTION, OK, OUT_OF_RANGE, Snapshot
from drivers.vocabulary import vocabulary
from gateway.applied import effective
from gateway.config import AnyDevice, Bus, Config, Device, SerialBus, TcpBus
from gateway.poller import LineReader
from gateway.tools.plan import line_settings, plan_for, render
from gateway.tools.port import ToolError, busy_message, port_holders
from gateway.tools.text import table

EX_USAGE = 2


def target_from_config(config: Config, device_id: str) -> tuple[Bus, AnyDevice]:
    device = next((d for d in config.devices if d.id == device_id), None)
    if device is None:
        known = ", ".join(d.id for d in config.devices) or "none"
        raise ToolError(f"{config.path}: no device {device_id!r} (devices: {known})", EX_USAGE)
    return config.bus(device.bus), device


def target_from_arguments(args: argparse.Namespace) -> tuple[Bus, AnyDevice]:
    """A bus and device described on the command line instead of in a config."""
    bus: Bus
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit():
            raise ToolError(
                f"--tcp {args.tcp}: expected HOST:PORT, e.g. 192.168.1.20:502", EX_USAGE
            )
        bus = TcpBus("cli", host, int(port), timeout_s=args.timeout)
    elif args.port:
        baudrate = args.baudrate or (2400 if args.dlt645 else 9600)
        parity = args.parity or ("E" if args.dlt645 else "N")
        bus = SerialBus("cli", args.port, baudrate, parity, timeout_s=args.timeout)
    else:
        raise ToolError(
            "give a DEVICE from the config, or --port (or --tcp) to read directly", EX_USAGE
        )
    if args.dlt645:
        if not isinstance(bus, SerialBus):
            raise ToolError("DL/T 645 meters are read over a serial --port, not --tcp", EX_USAGE)
        try:
            return bus, Dlt645Device("meter", args.dlt645, bus="cli")
        except ValueError as exc:
            raise ToolError(f"--dlt645: {exc}", EX_USAGE) from None
    if not args.profile:
        raise ToolError(
            "give --profile NAME for a Modbus meter (`cgw profiles` lists them)", EX_USAGE
        )
    try:
        profile = load_shipped_profile(args.profile)
    except KeyError:
        raise ToolError(
            f"--profile {args.profile}: no such profile (`cgw profiles` lists them)", EX_USAGE
        ) from None
    return bus, Device("meter", "cli", args.unit, profile)


def describe_line(bus: Bus) -> str:
    if isinstance(bus, SerialBus):
        return f"{bus.port} at {line_settings(bus)}"
    return f"{bus.host}:{bus.port} (Modbus TCP)"


def who(device: AnyDevice) -> str:
    if isinstance(device, Dlt645Device):
        return f"DL/T 645 meter {device.address}"
    return f"unit {device.unit} ({device.profile.name})"


def likely_causes(bus: Bus, snapshot: Snapshot) -> str:
    """What an electrician should look at, given how the read failed."""
    if snapshot.quality == NO_CONNECTION:
        return "check the adapter is plugged in, the port name, and that no other program uses it"
    if snapshot.quality == EXCEPTION:
        return "the meter is there but refuses these registers: wrong profile for this meter model?"
    if isinstance(bus, TcpBus):
        if snapshot.quality == INVALID_RESPONSE:
            return (
                "something answers but not as expected: wrong unit id or not a Modbus TCP device?"
            )
        return (
            "wrong unit id, or the meter/gateway behind this address is off; check its own display"
        )
    if snapshot.quality == INVALID_RESPONSE:
        return (
            "bytes arrive garbled: wrong baud rate or parity, two meters with the same address, "
            "or a long line without termination/bias resistors"
        )
    scan = f"`cgw scan {bus.port}` finds meters" if isinstance(bus, SerialBus) else ""
    return (
        "wiring A/B swapped, wrong unit id/address, wrong baud rate or parity, missing "
        f"termination on a long line, or the meter is not powered; {scan}"
    )


def read_once(bus: Bus, device: AnyDevice) -> Snapshot:
    """One poll of `device`; ToolError when its serial port is held by another process."""
    if isinstance(bus, SerialBus):
        holders = port_holders(bus.port)
        if holders:
            raise ToolError(busy_message(bus.port, holders))
    reader = LineReader(bus, [device])
    try:
        return reader.read(device, bus.timeout_s)[0]
    finally:
        reader.close()


def rows(snapshot: Snapshot, device: AnyDevice) -> list[tuple[str, str, str, str]]:
    units = device.quantity_units()
    words = vocabulary()
    out = []
    for quantity in units:
        value = snapshot.values.get(quantity)
        shown = "-" if value is None else _format(value)
        flag = snapshot.flags.get(quantity, "")
        if flag == "out_of_range":
            q = words[quantity]
            flag = f"out of range ({q.min:g}..{q.max:g})"
        out.append((quantity, shown, units[quantity], flag))
    return out


def _format(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"


def cmd_read(args: argparse.Namespace) -> int:
    if args.device:
        bus, device = target_from_config(effective(Path(args.config)), args.device)
    else:
        bus, device = target_from_arguments(args)
    explained = plan_for(device, bus)
    snapshot = read_once(bus, device)
    if snapshot.quality not in (OK, OUT_OF_RANGE):
        raise ToolError(
            f"{who(device)} on {describe_line(bus)} did not answer properly: {snapshot.error}. "
            f"Likely causes: {likely_causes(bus, snapshot)}"
        )
    if args.json:
        result: dict[str, Any] = snapshot.record()
        if args.explain:
            result["plan"] = explained.as_dict()
        print(json.dumps(result, indent=2))
        return 0
    if args.explain:
        print(render(explained) + "\n")
    print(f"{who(device)} on {describe_line(bus)}: {snapshot.quality}")
    print(table(("quantity", "value", "unit", "flag"), rows(snapshot, device)))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    bus, device = target_from_config(effective(Path(args.config)), args.device)
    explained = plan_for(device, bus)
    print(json.dumps(explained.as_dict(), indent=2) if args.json else render(explained))
    return 0


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", nargs="?", help="a device id from the config")
    parser.add_argument("--port", help="read directly on this serial port instead")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="read directly over Modbus TCP instead")
    parser.add_argument("--baudrate", type=int, help="default 9600 (2400 with --dlt645)")
    parser.add_argument("--parity", choices=["N", "E", "O"], help="default N (E with --dlt645)")
    parser.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    parser.add_argument("--profile", help="meter profile for a direct Modbus read (`cgw profiles`)")
    parser.add_argument(
        "--dlt645", metavar="ADDRESS", help="read a DL/T 645 meter at this 12-digit address"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        help="seconds to wait for an answer (direct reads; default 1)",
    )
    parser.add_argument(
        "--explain", action="store_true", help="also show the requests and the wire time"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
