"""`cgw emulate`: serve emulated meters on a serial line, a new pty, or a TCP port until stopped."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass
from types import FrameType

from drivers.dlt645.emulation import FAULTS as DLT645_FAULTS
from drivers.dlt645.emulation import EmulatedDlt645Meter
from drivers.dlt645.frame import normalise_address
from drivers.emulation.meter import FAULTS, EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile, shipped_profiles

EX_USAGE = 2
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DEFAULT_METERS = ("1:eastron_sdm630", "2:chint_dtsu666")


class UsageError(Exception):
    """A bad argument; the message is the whole explanation."""


@dataclass(frozen=True)
class MeterSpec:
    unit: int
    profile: str
    fault: str | None


@dataclass(frozen=True)
class Dlt645Spec:
    address: str
    fault: str | None


@dataclass(frozen=True)
class Options:
    meters: tuple[MeterSpec, ...]
    dlt645: tuple[Dlt645Spec, ...]
    serial: str | None
    baudrate: int
    parity: str
    stopbits: int
    pty: str | None
    tcp: tuple[str, int] | None
    seed: int
    baud_accurate: bool = False
    latency_s: float = 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Values are checked in run(), so that every mistake is one clear line (argparse adds usage).
    parser.add_argument(
        "--rig",
        metavar="FILE",
        help="serve the lines, meters and scripted scenario of a rig file (docs/RIG.md) instead "
        "of the options below",
    )
    parser.add_argument(
        "--serial", metavar="PATH", help="serve Modbus RTU (and DL/T 645) on this serial device"
    )
    parser.add_argument(
        "--baudrate",
        default="9600",
        help="baud rate for --serial and --baud-accurate (default 9600)",
    )
    parser.add_argument(
        "--parity", default="N", help="N, E or O for --serial and --baud-accurate (default N)"
    )
    parser.add_argument(
        "--stopbits", default="1", help="1 or 2 for --serial and --baud-accurate (default 1)"
    )
    parser.add_argument(
        "--pty",
        metavar="LINK",
        help="create a pty pair, serve RTU on one end and symlink the other end at LINK",
    )
    parser.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP (port 0: any free)")
    parser.add_argument(
        "--meter",
        action="append",
        metavar="UNIT:PROFILE[:FAULT]",
        help="a meter to emulate (repeatable; default: "
        f"{' and '.join(DEFAULT_METERS)}); FAULT is one of {', '.join(FAULTS)}",
    )
    parser.add_argument(
        "--dlt645",
        action="append",
        metavar="ADDRESS[:FAULT]",
        help="a DL/T 645-2007 meter with this 12-digit address on the same serial line or pty "
        f"(repeatable); FAULT is one of {', '.join(DLT645_FAULTS)}",
    )
    parser.add_argument("--seed", default="0", help="seed of the emulated loads (default 0)")
    parser.add_argument(
        "--baud-accurate",
        action="store_true",
        help="pace --serial and --pty lines to --baudrate/--parity/--stopbits: requests count as "
        "arrived after their wire time, answers leave no faster than the line allows",
    )
    parser.add_argument(
        "--latency-ms",
        default="0",
        help="every Modbus meter answers this many milliseconds after the request (default 0)",
    )


def _integer(text: str, option: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a whole number") from None
    if not low <= value <= high:
        raise UsageError(f"{option} {text!r}: must be between {low} and {high}")
    return value


def _meter(text: str) -> MeterSpec:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise UsageError(f"--meter {text!r}: expected UNIT:PROFILE or UNIT:PROFILE:FAULT")
    unit = _integer(parts[0], f"--meter {text!r}: unit", 1, 247)
    if parts[1] not in shipped_profiles():
        raise UsageError(
            f"--meter {text!r}: no profile {parts[1]!r} (shipped: {', '.join(shipped_profiles())})"
        )
    fault = parts[2] if len(parts) == 3 else None
    if fault is not None and fault not in FAULTS:
        raise UsageError(f"--meter {text!r}: no fault {fault!r} (one of {', '.join(FAULTS)})")
    return MeterSpec(unit, parts[1], fault)


def _dlt645(text: str) -> Dlt645Spec:
    address, _, fault = text.partition(":")
    try:
        address = normalise_address(address)
    except ValueError:
        raise UsageError(f"--dlt645 {text!r}: the address must be 12 decimal digits") from None
    if "A" in address:
        raise UsageError(f"--dlt645 {text!r}: the address must be 12 decimal digits")
    if fault and fault not in DLT645_FAULTS:
        raise UsageError(
            f"--dlt645 {text!r}: no fault {fault!r} (one of {', '.join(DLT645_FAULTS)})"
        )
    return Dlt645Spec(address, fault or None)


def _tcp(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--tcp {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1502")
    return host.strip("[]"), _integer(port, f"--tcp {text!r}: port", 0, 65535)


def parse_options(args: argparse.Namespace) -> Options:
    dlt645 = tuple(_dlt645(text) for text in (args.dlt645 or ()))
    addresses = [d.address for d in dlt645]
    twice = next((a for a in addresses if addresses.count(a) > 1), None)
    if twice is not None:
        raise UsageError(f"--dlt645: address {twice} given twice")
    # Default Modbus meters only when nothing at all was asked for.
    meters = tuple(_meter(text) for text in (args.meter or ([] if dlt645 else DEFAULT_METERS)))
    units = [m.unit for m in meters]
    duplicate = next((u for u in units if units.count(u) > 1), None)
    if duplicate is not None:
        raise UsageError(f"--meter: unit {duplicate} given twice")
    if not (args.serial or args.pty or args.tcp):
        raise UsageError(
            "nothing to serve on: give --serial PATH, --pty LINK and/or --tcp HOST:PORT"
        )
    baudrate = _integer(args.baudrate, "--baudrate", 1, 4_000_000)
    if baudrate not in BAUDRATES:
        raise UsageError(f"--baudrate {baudrate}: one of {', '.join(map(str, BAUDRATES))}")
    parity = args.parity.upper()
    if parity not in ("N", "E", "O"):
        raise UsageError(f"--parity {args.parity!r}: N, E or O")
    return Options(
        meters=meters,
        dlt645=dlt645,
        serial=args.serial,
        baudrate=baudrate,
        parity=parity,
        stopbits=_integer(args.stopbits, "--stopbits", 1, 2),
        pty=args.pty,
        tcp=_tcp(args.tcp) if args.tcp else None,
        seed=_integer(args.seed, "--seed", -(2**63), 2**63 - 1),
        baud_accurate=bool(args.baud_accurate),
        latency_s=_integer(args.latency_ms, "--latency-ms", 0, 60_000) / 1000,
    )


def _start(server: EmulatorServer, options: Options) -> list[str]:
    """Open every endpoint; returns what each serves on, for the user. UsageError if one fails."""
    places = []
    line = f"{options.baudrate} 8{options.parity}{options.stopbits}"
    if options.serial:
        if not os.path.exists(options.serial):
            raise UsageError(f"--serial {options.serial}: no such device")
        try:
            server.serve_serial(
                options.serial,
                options.baudrate,
                options.parity,
                options.stopbits,
                baud_accurate=options.baud_accurate,
            )
        except OSError as exc:
            raise UsageError(f"--serial {options.serial}: cannot open: {exc}") from None
        paced = ", baud-accurate" if options.baud_accurate else ""
        places.append(f"{options.serial} (RTU {line}{paced})")
    if options.pty:
        try:
            slave = server.start_pty(
                options.pty,
                options.baudrate,
                options.parity,
                options.stopbits,
                baud_accurate=options.baud_accurate,
            )
        except OSError as exc:
            raise UsageError(f"--pty {options.pty}: cannot create: {exc.strerror}") from None
        speed = f"paced at {line}" if options.baud_accurate else "any baud rate"
        places.append(f"{options.pty} -> {slave} (RTU over a pty, {speed})")
    if options.tcp:
        host, port = options.tcp
        try:
            actual = server.serve_tcp(host, port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise UsageError(f"--tcp {host}:{port}: cannot listen: {reason}") from None
        places.append(f"{host}:{actual} (Modbus TCP)")
    return places


def run(args: argparse.Namespace) -> int:
    if args.rig is not None:
        return run_rig(args)
    try:
        options = parse_options(args)
    except UsageError as exc:
        print(f"cgw emulate: {exc}", file=sys.stderr)
        return EX_USAGE
    meters = [
        EmulatedMeter(
            m.unit,
            load_shipped_profile(m.profile),
            seed=options.seed,
            fault=m.fault,
            latency_s=options.latency_s,
        )
        for m in options.meters
    ]
    dlt645_meters = [
        EmulatedDlt645Meter(d.address, seed=options.seed, fault=d.fault) for d in options.dlt645
    ]
    server = EmulatorServer(meters, dlt645_meters)
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        try:
            places = _start(server, options)
        except UsageError as exc:
            print(f"cgw emulate: {exc}", file=sys.stderr)
            return 1
        for place in places:
            for m in options.meters:
                fault = f" with fault {m.fault}" if m.fault else ""
                print(f"serving unit {m.unit} {m.profile}{fault} on {place}")
            if "Modbus TCP" in place:
                continue  # DL/T 645 meters are served on serial lines only
            for d in options.dlt645:
                fault = f" with fault {d.fault}" if d.fault else ""
                print(f"serving DL/T 645 meter {d.address}{fault} on {place}")
        print("press Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            if server.failures:
                print(f"cgw emulate: stopped: {server.failures[0]}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()
        _restore(previous)


def _stop_on_signals(stop: threading.Event) -> dict[int, object]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def run_rig(args: argparse.Namespace) -> int:
    from drivers.emulation.rig import Rig, load_rig
    from gateway.tomltable import ConfigError

    others = [
        option
        for option, value in (
            ("--serial", args.serial),
            ("--pty", args.pty),
            ("--tcp", args.tcp),
            ("--meter", args.meter),
            ("--dlt645", args.dlt645),
            ("--baud-accurate", args.baud_accurate),
        )
        if value
    ]
    if others:
        print(
            f"cgw emulate: --rig takes everything from its file; drop {others[0]}", file=sys.stderr
        )
        return EX_USAGE
    try:
        spec = load_rig(args.rig)
    except ConfigError as exc:
        print(f"cgw emulate: {exc}", file=sys.stderr)
        return EX_USAGE
    rig = Rig(spec)
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        try:
            places = rig.start()
        except OSError as exc:
            print(f"cgw emulate: {spec.path}: cannot open a line: {exc}", file=sys.stderr)
            return 1
        for place in places:
            print(f"serving {place}")
        for meter in spec.meters:
            what = (
                f"unit {meter.unit} {meter.profile}" if meter.unit else f"DL/T 645 {meter.dlt645}"
            )
            print(f"  meter {meter.id}: {what} on line {meter.line}")
        print(f"{len(spec.events)} scripted events, rig clock at {spec.speed:g}x", flush=True)
        rig.run(stop, lambda line: print(line, flush=True))
        for line_id, server in rig.servers.items():
            print(f"line {line_id}: {server.noisy_answers} answers spoilt by noise", flush=True)
        failures = rig.failures()
        if failures:
            print(f"cgw emulate: stopped: {failures[0]}", file=sys.stderr)
            return 1
        return 0
    finally:
        rig.stop()
        _restore(previous)
