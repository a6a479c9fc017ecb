"""The inventory IT keeps: one row per gateway, keyed by the board's serial number.

A CSV file (header row, one gateway a line) or a TOML file (`[defaults]` and `[[gateways]]`); both
give the same entries. Columns: docs/PROVISIONING.md.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.tomltable import IDENTIFIER
from provisioning.broker import Broker, parse_broker
from provisioning.errors import Exit, ProvisionError

REQUIRED = ("serial", "gateway_id", "site", "broker")
# Short columns for the template's one serial (rtu) bus, and the bus key each one sets.
SHORTHAND = {
    "rs485_port": "port",
    "baudrate": "baudrate",
    "parity": "parity",
    "bytesize": "bytesize",
    "stopbits": "stopbits",
}
WHOLE_NUMBERS = {"baudrate", "bytesize", "stopbits"}
OPTIONAL = ("timezone", "template", "mqtt_username", *SHORTHAND)
COLUMNS = (*REQUIRED, *OPTIONAL)
BUS_COLUMN = re.compile(r"^bus\.(.+)\.([A-Za-z0-9_]+)$")  # bus.<bus id>.<key>
TOML_GATEWAY = re.compile(r"^[ \t]*\[\[[ \t]*gateways[ \t]*\]\]", re.MULTILINE)


@dataclass(frozen=True)
class Entry:
    serial: str
    gateway_id: str
    site: str
    broker: Broker
    where: str  # "inventory.csv line 3", for messages and the config's header
    timezone: str | None = None
    template: Path | None = None
    mqtt_username: str | None = None
    rs485: Mapping[str, Any] = field(default_factory=dict)  # shorthand: bus key -> value
    buses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # bus id -> key -> value


@dataclass(frozen=True)
class Inventory:
    path: Path
    entries: tuple[Entry, ...]

    def find(self, serial: str, source: str = "--serial") -> Entry:
        wanted = serial.strip().lower()
        for entry in self.entries:
            if entry.serial.lower() == wanted:
                return entry
        raise ProvisionError(
            f"serial {serial} (from {source}) not found in {self.path} "
            f"({len(self.entries)} gateways listed): "
            "add a row for this board, or give --serial if it was read wrongly",
            Exit.SERIAL_UNKNOWN,
        )


def _error(where: str, message: str) -> ProvisionError:
    return ProvisionError(f"{where}: {message}", Exit.INVENTORY)


def _typed(text: str) -> Any:
    """A CSV cell for a bus key: true/false, a whole number, a number, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return text


def _text(raw: Mapping[str, Any], name: str, where: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error(where, f"{name} must be text (in TOML: quoted), not {value!r}")
    return value.strip() or None


def _entry(raw: Mapping[str, Any], where: str, base: Path) -> Entry:
    for name in REQUIRED:
        if _text(raw, name, where) is None:
            raise _error(where, f"{name} is empty; every gateway needs {', '.join(REQUIRED)}")
    serial, gateway_id, site, broker_url = (str(_text(raw, n, where)) for n in REQUIRED)
    for name, value in (("gateway_id", gateway_id), ("site", site)):
        if not IDENTIFIER.match(value):
            raise _error(
                where,
                f"{name} {value!r} is not a valid identifier (letters, digits, '.', '_', '-'; "
                "at most 64; no spaces, '/', '+' or '#')",
            )
    try:
        broker = parse_broker(broker_url)
    except ValueError as exc:
        raise _error(where, f"broker {exc}") from None
    timezone = _text(raw, "timezone", where)
    if timezone is not None:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _error(where, f"unknown time zone {timezone!r} (e.g. Asia/Shanghai)") from None
    template = _text(raw, "template", where)
    rs485 = {}
    for column, key in SHORTHAND.items():
        cell = raw.get(column)
        if cell is None or cell == "":
            continue
        if column in WHOLE_NUMBERS and (isinstance(cell, bool) or not isinstance(cell, int)):
            raise _error(where, f"{column} must be a whole number, not {cell!r}")
        if column not in WHOLE_NUMBERS and not isinstance(cell, str):
            raise _error(where, f"{column} must be text, not {cell!r}")
        rs485[key] = cell
    buses = raw.get("bus", {})
    if not isinstance(buses, Mapping) or not all(isinstance(b, Mapping) for b in buses.values()):
        raise _error(where, "bus must be a table of bus ids, e.g. bus.rs485-1.port = '/dev/…'")
    return Entry(
        serial=serial,
        gateway_id=gateway_id,
        site=site,
        broker=broker,
        where=where,
        timezone=timezone,
        template=(base / template) if template else None,
        mqtt_username=_text(raw, "mqtt_username", where),
        rs485=rs485,
        buses={str(k): dict(v) for k, v in buses.items()},
    )


def _csv_rows(path: Path, text: str) -> list[tuple[dict[str, Any], str]]:
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    delimiter = ";" if ";" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows = []
    for cells in reader:
        where = f"{path}: line {reader.line_num}"
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            for name in header:
                if name not in COLUMNS and not BUS_COLUMN.match(name):
                    raise _error(
                        where,
                        f"unknown column {name!r} (misspelt?); columns are {', '.join(COLUMNS)} "
                        "and bus.<bus id>.<key>",
                    )
            missing = [n for n in REQUIRED if n not in header]
            if missing:
                raise _error(where, f"the header has no column {', '.join(missing)}")
            if len(set(header)) != len(header):
                raise _error(where, "a column is named twice in the header")
            continue
        if len(cells) != len(header):
            raise _error(where, f"{len(cells)} fields, but the header has {len(header)}")
        raw: dict[str, Any] = {}
        for name, cell in zip(header, cells, strict=True):
            value = cell.strip()
            if not value:
                continue
            if match := BUS_COLUMN.match(name):
                raw.setdefault("bus", {}).setdefault(match[1], {})[match[2]] = _typed(value)
            elif name in WHOLE_NUMBERS:
                if not value.isdigit():
                    raise _error(where, f"{name} must be a whole number, not {value!r}")
                raw[name] = int(value)
            else:
                raw[name] = value
        rows.append((raw, where))
    if header is None:
        raise _error(str(path), "empty: no header row")
    return rows


def _merge(defaults: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in row.items():
        if key == "bus" and isinstance(value, Mapping) and isinstance(merged.get("bus"), Mapping):
            buses = {k: dict(v) for k, v in merged["bus"].items()}
            for bus_id, settings in value.items():
                buses.setdefault(bus_id, {}).update(settings)
            merged["bus"] = buses
        else:
            merged[key] = value
    return merged


def _toml_rows(path: Path, text: str) -> list[tuple[dict[str, Any], str]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _error(str(path), f"not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"defaults", "gateways"})
    if unknown:
        raise _error(str(path), f"unknown table {unknown[0]!r}: only [defaults] and [[gateways]]")
    defaults = data.get("defaults", {})
    gateways = data.get("gateways", [])
    if not isinstance(defaults, dict) or not isinstance(gateways, list):
        raise _error(str(path), "[defaults] is a table and [[gateways]] an array of tables")
    lines = [text.count("\n", 0, m.start()) + 1 for m in TOML_GATEWAY.finditer(text)]
    rows = []
    for i, row in enumerate(gateways):
        line = f"line {lines[i]} " if i < len(lines) else ""
        where = f"{path}: {line}(gateways[{i}])"
        if not isinstance(row, dict):
            raise _error(where, "each gateway is a table")
        for source, table in (("defaults", defaults), (f"gateways[{i}]", row)):
            for key in table:
                if key not in COLUMNS and key != "bus":
                    raise _error(where, f"{source}: unknown key {key!r} (misspelt?)")
        rows.append((_merge(defaults, row), where))
    return rows


def read_inventory(path: Path) -> Inventory:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _error(str(path), "no such file") from None
    except OSError as exc:
        raise _error(str(path), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _error(str(path), "is not UTF-8 text (save it as CSV UTF-8)") from None
    is_toml = path.suffix.lower() == ".toml"
    rows = _toml_rows(path, text) if is_toml else _csv_rows(path, text)
    entries: list[Entry] = []
    serials: dict[str, str] = {}
    ids: dict[str, str] = {}
    for raw, where in rows:
        entry = _entry(raw, where, path.parent)
        for seen, value, what in (
            (serials, entry.serial.lower(), "serial"),
            (ids, entry.gateway_id, "gateway_id"),
        ):
            if value in seen:
                raise _error(where, f"{what} {value} is already listed ({seen[value]})")
            seen[value] = where.rsplit(": ", 1)[-1]
        entries.append(entry)
    if not entries:
        raise _error(str(path), "lists no gateways")
    return Inventory(path, tuple(entries))
