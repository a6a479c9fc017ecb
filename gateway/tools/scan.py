"""`cgw scan`: find the meters on a line (unit ids, baud rates, parities, DL/T 645 discovery),
name their models and print a config snippet to paste."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field

from drivers.dlt645.client import Dlt645Bus, Dlt645ErrorReply, Dlt645InvalidReply, Dlt645Timeout
from gateway.config import Bus, SerialBus, TcpBus
from gateway.tools.identify import identify
from gateway.tools.plan import line_settings
from gateway.tools.port import ToolError, busy_message, port_holders
from gateway.tools.probe import PortUnavailable, RawModbus
from gateway.tools.text import Progress, table

EX_USAGE = 2
DLT645_FIELD_BAUD = 2400
DLT645_TIMEOUT_S = 0.5  # DL/T 645 meters often take 100-300 ms to answer
PROBE = (
    3,
    0x0000,
    1,
)  # FC03 of one register: answered, or refused with an exception, by most meters


@dataclass(frozen=True)
class Found:
    line: str  # "/dev/ttyUSB0 9600 8N1" or "tcp 10.0.0.5:502"
    unit: int | None
    address: str | None  # DL/T 645
    model: str
    profile: str | None
    how: str
    baudrate: int | None = None
    parity: str | None = None


@dataclass
class ScanResult:
    found: list[Found] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_units(text: str, high: int) -> list[int]:
    units: set[int] = set()
    for part in text.split(","):
        low_text, _, high_text = part.strip().partition("-")
        try:
            first, last = int(low_text), int(high_text or low_text)
        except ValueError:
            raise ToolError(f"--units {text}: expected e.g. 1-247 or 1,7,10-20", EX_USAGE) from None
        if not 0 <= first <= last <= high:
            raise ToolError(f"--units {text}: unit ids go from 0 (TCP) or 1 to {high}", EX_USAGE)
        units.update(range(first, last + 1))
    return sorted(units)


def parse_list(text: str, option: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip().upper() for t in text.split(",") if t.strip()]
    if not items or (allowed and any(i not in allowed for i in items)):
        raise ToolError(f"{option} {text}: expected a comma-separated list", EX_USAGE)
    return items


def _probe_timeout(bus: Bus, timeout_s: float) -> float:
    """The wait for one probe: the caller's budget plus the probe's own time on the wire."""
    return timeout_s + (bus.read_wire_s(PROBE[2]) if isinstance(bus, SerialBus) else 0.0)


class Scanner:
    def __init__(
        self,
        buses: list[Bus],
        units: list[int],
        timeout_s: float,
        dlt645_bauds: list[int],
        all_settings: bool,
        progress: Progress | None = None,
    ) -> None:
        self.buses = buses
        self.units = units
        self.timeout_s = timeout_s
        self.dlt645_bauds = dlt645_bauds
        self.all_settings = all_settings
        self.progress = progress or Progress(self.steps())

    def steps(self) -> int:
        return len(self.buses) * len(self.units) + len(self.dlt645_bauds)

    def worst_case_s(self) -> float:
        modbus = sum(len(self.units) * _probe_timeout(b, self.timeout_s) for b in self.buses)
        return modbus + len(self.dlt645_bauds) * DLT645_TIMEOUT_S

    def run(self) -> ScanResult:
        result = ScanResult()
        try:
            for bus in self.buses:
                self.progress.advance(_describe(bus), 0)
                found = self._sweep(bus, result)
                if found and not self.all_settings:
                    # One RS-485 line runs at one setting: the rest would find nothing new.
                    self.progress.advance(
                        "", len(self.units) * (len(self.buses) - self.buses.index(bus) - 1)
                    )
                    break
            self._discover_dlt645(result)
        finally:
            self.progress.finish()
        return result

    def _sweep(self, bus: Bus, result: ScanResult) -> bool:
        raw = RawModbus(bus, _probe_timeout(bus, self.timeout_s))
        present, garbled = [], []
        try:
            for unit in self.units:
                outcome = raw.read(unit, *PROBE)
                self.progress.advance(f"{_describe(bus)} unit {unit}")
                if outcome.present:
                    present.append(unit)
                elif outcome.garbled:
                    garbled.append(unit)
            for unit in present:
                self.progress.advance(f"identifying unit {unit}", 0)
                ident = identify(raw, unit)
                result.found.append(
                    Found(
                        _describe(bus),
                        unit,
                        None,
                        ident.profile or "unknown Modbus device",
                        ident.profile,
                        ident.how,
                        bus.baudrate if isinstance(bus, SerialBus) else None,
                        bus.parity if isinstance(bus, SerialBus) else None,
                    )
                )
        finally:
            raw.close()
        if garbled:
            listed = ", ".join(str(u) for u in garbled[:10])
            result.notes.append(
                f"{_describe(bus)}: garbled answers for unit(s) {listed}: a meter at another baud "
                "rate or parity, two meters sharing a unit id, or a noisy/unterminated line"
            )
        return bool(present)

    def _discover_dlt645(self, result: ScanResult) -> None:
        # A mixed line has one setting: where Modbus meters answered, try that first.
        modbus_settings = [(f.baudrate, f.parity) for f in result.found if f.unit is not None]
        settings = [*modbus_settings, *((baud, "E") for baud in self.dlt645_bauds)]
        for baud, parity in dict.fromkeys(settings):
            if baud is None or parity is None:
                continue
            bus = SerialBus(
                "scan",
                self.buses[0].port if isinstance(self.buses[0], SerialBus) else "",
                baud,
                parity,
                timeout_s=DLT645_TIMEOUT_S,
            )
            self.progress.advance(f"DL/T 645 at {line_settings(bus)}")
            reader = Dlt645Bus(bus)
            try:
                address = reader.read_address()
            except Dlt645Timeout:
                continue
            except Dlt645InvalidReply:
                result.notes.append(
                    f"{_describe(bus)}: DL/T 645 answers collide: several meters answered the "
                    "wildcard address; connect them one at a time, or take each address from "
                    "its nameplate"
                )
                return
            except Dlt645ErrorReply as exc:
                result.notes.append(
                    f"{_describe(bus)}: a DL/T 645 meter refused to give its address ({exc})"
                )
                return
            except OSError as exc:
                raise PortUnavailable(f"cannot open serial port {bus.port}: {exc}") from None
            finally:
                reader.close()
            result.found.append(
                Found(
                    _describe(bus),
                    None,
                    address,
                    "DL/T 645 meter",
                    None,
                    "answered the wildcard address",
                    baud,
                    parity,
                )
            )
            return


def _describe(bus: Bus) -> str:
    if isinstance(bus, SerialBus):
        return f"{bus.port} {line_settings(bus)}"
    return f"tcp {bus.host}:{bus.port}"


def snippet(result: ScanResult, tcp: TcpBus | None, port: str | None) -> str:
    """[[buses]] and [[devices]] for what was found, ready to paste into gateway.toml."""
    bus_ids: dict[tuple[int | None, str | None], str] = {}
    out: list[str] = []
    for baudrate, parity in dict.fromkeys((f.baudrate, f.parity) for f in result.found):
        if tcp is not None:
            bus_ids[(baudrate, parity)] = "tcp"
            out.append(
                f'[[buses]]\nid = "tcp"\ntype = "tcp"\nhost = "{tcp.host}"\nport = {tcp.port}\n'
            )
            continue
        if bus_ids:
            # One port is one bus: meters found at another setting must be re-configured.
            bus_ids[(baudrate, parity)] = ""
            continue
        bus_ids[(baudrate, parity)] = "rs485"
        out.append(
            f'[[buses]]\nid = "rs485"\ntype = "rtu"\nport = "{port}"\n'
            f'baudrate = {baudrate}\nparity = "{parity}"\n'
        )
    for item in result.found:
        bus_id = bus_ids[(item.baudrate, item.parity)]
        if not bus_id:
            who = f"unit {item.unit}" if item.address is None else f"DL/T 645 meter {item.address}"
            out.append(
                f"# {who} answered at {item.baudrate} baud, parity {item.parity}, not at the line's "
                "setting above: set the meter to the line's setting (one line, one setting), scan again"
            )
            continue
        if item.address is not None:
            out.append(
                f'[[devices]]\nid = "dlt645-{item.address}"\nbus = "{bus_id}"\nprotocol = "dlt645"\n'
                f'address = "{item.address}"\n'
            )
        elif item.profile is not None:
            out.append(
                f'[[devices]]\nid = "meter-{item.unit}"\nbus = "{bus_id}"\nunit = {item.unit}\n'
                f'profile = "{item.profile}"\n'
            )
        else:
            out.append(
                f"# unit {item.unit}: unknown Modbus device; pick its profile (`cgw profiles`) and uncomment\n"
                f'# [[devices]]\n# id = "meter-{item.unit}"\n# bus = "{bus_id}"\n# unit = {item.unit}\n'
                f'# profile = "..."\n'
            )
    return "\n".join(out)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def cmd_scan(args: argparse.Namespace) -> int:
    tcp: TcpBus | None = None
    buses: list[Bus]
    if args.tcp:
        host, _, port_text = args.tcp.rpartition(":")
        if not host or not port_text.isdigit():
            raise ToolError(f"--tcp {args.tcp}: expected HOST:PORT", EX_USAGE)
        tcp = TcpBus("scan", host, int(port_text))
        buses, units_high, dlt645_bauds = [tcp], 255, []
    elif args.port:
        holders = port_holders(args.port)
        if holders:
            raise ToolError(busy_message(args.port, holders))
        try:
            bauds = [int(b) for b in parse_list(args.baudrates, "--baudrates")]
        except ValueError:
            raise ToolError(
                f"--baudrates {args.baudrates}: expected e.g. 9600,2400", EX_USAGE
            ) from None
        parities = parse_list(args.parity, "--parity", ("N", "E", "O"))
        buses = [SerialBus("scan", args.port, b, p) for b in bauds for p in parities]
        units_high = 247
        dlt645_bauds = (
            []
            if args.no_dlt645
            else [DLT645_FIELD_BAUD, *[b for b in bauds if b != DLT645_FIELD_BAUD]]
        )
    else:
        raise ToolError(
            "give the serial PORT to scan (e.g. /dev/ttyUSB0), or --tcp HOST:PORT", EX_USAGE
        )
    units = parse_units(args.units, units_high)
    scanner = Scanner(buses, units, args.timeout, dlt645_bauds, args.all_settings)
    settings = ", ".join(_describe(b).split(" ", 1)[-1] if not tcp else _describe(b) for b in buses)
    print(
        f"scanning {args.tcp or args.port}: {len(units)} unit ids x {len(buses)} settings ({settings})"
        f"{' + DL/T 645 discovery' if dlt645_bauds else ''}: at most {_minutes(scanner.worst_case_s())}"
        f" ({args.timeout:g} s per silent unit id); Ctrl-C stops",
        file=sys.stderr,
    )
    try:
        result = scanner.run()
    except PortUnavailable as exc:
        raise ToolError(
            f"{exc} (adapter unplugged, wrong name, or in use by another program?)"
        ) from None
    text = snippet(result, tcp, args.port)
    if args.json:
        print(
            json.dumps(
                {
                    "found": [asdict(f) for f in result.found],
                    "notes": result.notes,
                    "snippet": text,
                },
                indent=2,
            )
        )
        return 0 if result.found else 1
    for note in result.notes:
        print(f"note: {note}")
    if not result.found:
        print(
            "nothing answered. Check: meters powered; A/B wires (swap them and scan again); "
            "the unit ids and baud rates scanned; termination on a long line."
        )
        return 1
    rows = [
        (f.line, f.unit if f.address is None else f.address, f.model, f.how) for f in result.found
    ]
    print(table(("line", "unit/address", "model", "identified by"), rows))
    print("\n# paste into /etc/cgw/gateway.toml:\n" + text)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("port", nargs="?", help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument(
        "--tcp", metavar="HOST:PORT", help="scan unit ids behind a Modbus TCP address instead"
    )
    parser.add_argument(
        "--baudrates", default="9600,19200,4800,2400", help="default 9600,19200,4800,2400"
    )
    parser.add_argument("--parity", default="N,E", help="parities to try, default N,E")
    parser.add_argument(
        "--units", default="1-247", help="unit ids, e.g. 1-247 (default) or 1,7,10-20"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.1,
        help="seconds to wait per unit id beyond the wire time (default 0.1)",
    )
    parser.add_argument(
        "--all-settings",
        action="store_true",
        help="keep scanning other baud rates/parities after meters were found",
    )
    parser.add_argument("--no-dlt645", action="store_true", help="skip DL/T 645 discovery")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
