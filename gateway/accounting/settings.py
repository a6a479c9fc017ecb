"""The `[accounting]` section of the gateway config: which counters are accounted, as what.

Each `[[accounting.meters]]` entry is one accounted channel: a device's counter (or its power, or
a pulse input) with an energy carrier, a role at the site boundary and a scope. See docs/CONFIG.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from drivers.vocabulary import vocabulary
from gateway.accounting.alarms import BudgetRule, LimitRule
from gateway.accounting.factors import (
    CARRIER_UNITS,
    DEFAULT_GRID_KEY,
    FactorError,
    FactorLibrary,
)
from gateway.tomltable import ConfigError, Table, array

ROLES = ("grid_import", "grid_export", "pv", "wind", "load", "supply", "production")
ELECTRIC_ROLES = ("grid_import", "grid_export", "pv", "wind")
DEFAULT_QUANTITY = {
    "grid_import": "active_energy_import_kwh",
    "grid_export": "active_energy_export_kwh",
    "pv": "active_energy_export_kwh",
    "wind": "active_energy_export_kwh",
    "load": "active_energy_import_kwh",
}
# Meter unit -> carrier unit, where the conversion is a fixed number.
FIXED_CONVERSIONS = {
    ("kWh", "kWh"): Decimal(1),
    ("W", "kWh"): Decimal(1),  # integrated power is in kWh already
    ("Nm3", "Nm3"): Decimal(1),
    ("kg", "kg"): Decimal(1),
    ("GJ", "GJ"): Decimal(1),
    ("kWh", "GJ"): Decimal("0.0036"),
    ("m3", "m3"): Decimal(1),
}
NORMAL_KPA = Decimal("101.325")
ZERO_C_K = Decimal("273.15")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class MeterConfig:
    device: str
    quantity: str  # counter (or power) quantity read from the device
    role: str
    carrier: str | None  # None for a production counter
    scope: int | None
    unit: str  # the quantity's unit
    source: str  # "counter", "power" or "pulse"
    interval_s: float  # the device's poll interval: expected readings per period
    conversion: Decimal = Decimal(1)  # meter unit -> the carrier's factor unit
    pulses_per_unit: float | None = None
    rollover: Decimal | None = None  # the counter wraps to 0 here (meter unit)
    max_per_hour: Decimal | None = None  # most the meter can count in an hour (meter unit)
    emission_factor: str | None = None  # a factor key instead of the carrier's default
    daily_budget_kwh: Decimal | None = None

    @property
    def key(self) -> str:
        return f"{self.device}/{self.quantity}"

    @property
    def carrier_unit(self) -> str:
        return CARRIER_UNITS[self.carrier] if self.carrier else self.unit


@dataclass(frozen=True)
class AccountingConfig:
    meters: tuple[MeterConfig, ...] = ()
    interval_min: int = 15
    grace_s: float = 120.0
    gap_s: float = 300.0
    power_gap_limit_s: float = 300.0
    revision_days: int = 35
    checkpoint_s: float = 60.0
    offline_after: int = 3
    grid_factor: str = DEFAULT_GRID_KEY
    factors: FactorLibrary = field(default_factory=FactorLibrary.shipped)
    green_certificates_kwh: Mapping[str, Decimal] = field(default_factory=dict)
    limits: tuple[LimitRule, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.meters or self.limits)

    @property
    def budgets(self) -> tuple[BudgetRule, ...]:
        return tuple(
            BudgetRule(m.device, m.daily_budget_kwh)
            for m in self.meters
            if m.daily_budget_kwh is not None
        )


@dataclass(frozen=True)
class Source:
    """What the config says a device or pulse input is: for checking meter entries against it."""

    quantities: Sequence[str]
    interval_s: float
    pulses_per_unit: float | None = None


def _decimal(table: Table, name: str, low: float, high: float) -> Decimal | None:
    if name not in table.data:
        table.read.add(name)
        return None
    value = table.number(name, 0.0, low, high)
    return Decimal(repr(value))


def _conversion(table: Table, carrier: str | None, unit: str) -> Decimal:
    """Meter unit -> carrier unit: fixed, `conversion`, or gas line conditions (T, p)."""
    given = _decimal(table, "conversion", 1e-9, 1e9)
    temperature = _decimal(table, "line_temperature_c", -40, 100)
    pressure = _decimal(table, "line_pressure_kpa", 1, 10_000)
    if (temperature is None) != (pressure is None):
        missing = "line_pressure_kpa" if pressure is None else "line_temperature_c"
        raise table.error(missing, "line_temperature_c and line_pressure_kpa go together")
    if temperature is not None and pressure is not None:
        if given is not None:
            raise table.error("conversion", "give conversion or the line conditions, not both")
        if carrier != "natural_gas" or unit != "m3":
            raise table.error("line_temperature_c", "line conditions only convert gas m3 to Nm3")
        return (pressure / NORMAL_KPA) * (ZERO_C_K / (ZERO_C_K + temperature))
    if given is not None:
        return given
    if carrier is None:
        return Decimal(1)
    fixed = FIXED_CONVERSIONS.get((unit, CARRIER_UNITS[carrier]))
    if fixed is None:
        hint = (
            " (gas counted at line conditions: give line_temperature_c and line_pressure_kpa, "
            "or the corrector's conversion factor)"
            if carrier == "natural_gas"
            else ""
        )
        raise table.error(
            "conversion",
            f"is required: the meter counts {unit or 'pulses'}, {carrier} factors are per "
            f"{CARRIER_UNITS[carrier]}{hint}",
        )
    return fixed


def _meter(table: Table, sources: Mapping[str, Source], library: FactorLibrary) -> MeterConfig:
    device = table.get("device", str)
    source = sources.get(device)
    if source is None:
        raise table.error("device", f"{device!r} is not a device or pulse input of this config")
    role = table.choice("role", ROLES)
    if role == "supply":  # a boundary meter of a fuel, heat or water: say which
        carrier = table.get("carrier", str)
    else:
        carrier = table.get("carrier", str, None if role == "production" else "electricity")
    if role == "production":
        if carrier is not None:
            raise table.error("carrier", "a production counter counts products, not energy")
    elif carrier not in CARRIER_UNITS:
        listed = ", ".join(CARRIER_UNITS)
        raise table.error("carrier", f"must be one of {listed}, not {carrier!r}")
    if role in ELECTRIC_ROLES and carrier != "electricity":
        raise table.error("carrier", f"role {role!r} is electricity")
    if role == "supply" and carrier == "electricity":
        raise table.error("carrier", "electricity at the site boundary is role grid_import")
    if source.pulses_per_unit is not None:
        quantity = table.get("quantity", str, source.quantities[0])
    else:
        quantity = table.get("quantity", str, DEFAULT_QUANTITY.get(role, MISSING_QUANTITY))
    if quantity is MISSING_QUANTITY:
        raise table.error("quantity", f"is required for role {role!r}")
    if quantity not in source.quantities:
        raise table.error("quantity", f"{device!r} does not read {quantity!r}")
    definition = vocabulary()[quantity]
    if definition.kind == "counter":
        kind = "pulse" if source.pulses_per_unit is not None else "counter"
    elif definition.unit == "W" and carrier == "electricity":
        kind = "power"
    else:
        raise table.error("quantity", f"{quantity!r} is neither a counter nor active power")
    scopes = (1, 2, 3)
    default_scope = _default_scope(role, carrier)
    scope = table.get("scope", int, default_scope)
    if scope is not None and scope not in scopes:
        raise table.error("scope", f"must be 1, 2 or 3, not {scope!r}")
    emission_factor = table.get("emission_factor", str, None)
    if emission_factor is not None:
        try:
            factor = library.get(emission_factor)
        except FactorError as exc:
            raise table.error("emission_factor", str(exc)) from None
        wanted = f"kgCO2e/{CARRIER_UNITS[carrier]}" if carrier else None
        if factor.unit != wanted:
            raise table.error(
                "emission_factor",
                f"{emission_factor!r} is in {factor.unit}, this meter needs {wanted}",
            )
    budget = _decimal(table, "daily_budget_kwh", 1e-6, 1e9)
    if budget is not None and carrier != "electricity":
        raise table.error("daily_budget_kwh", "budgets are in kWh: electricity meters only")
    meter = MeterConfig(
        device=device,
        quantity=quantity,
        role=role,
        carrier=carrier,
        scope=scope,
        unit=definition.unit,
        source=kind,
        interval_s=source.interval_s,
        conversion=_conversion(table, carrier, definition.unit),
        pulses_per_unit=source.pulses_per_unit,
        rollover=_decimal(table, "rollover", 1e-3, 1e15),
        max_per_hour=_decimal(table, "max_per_hour", 1e-6, 1e12),
        emission_factor=emission_factor,
        daily_budget_kwh=budget,
    )
    table.done()
    return meter


MISSING_QUANTITY = "(missing)"


def _default_scope(role: str, carrier: str | None) -> int | None:
    if role in ("grid_export", "pv", "wind", "production") or carrier in (None, "water"):
        return None
    if carrier in ("electricity", "heat", "steam"):
        return 2
    return 1


def _limit(table: Table, sources: Mapping[str, Source]) -> LimitRule:
    device = table.get("device", str)
    source = sources.get(device)
    if source is None:
        raise table.error("device", f"{device!r} is not a device or pulse input of this config")
    quantity = table.get("quantity", str)
    if quantity not in source.quantities:
        raise table.error("quantity", f"{device!r} does not read {quantity!r}")
    above = table.get("above", float, None)
    below = table.get("below", float, None)
    try:
        rule = LimitRule(
            device=device,
            quantity=quantity,
            above=above,
            below=below,
            hysteresis=table.number("hysteresis", 0.0, 0, math.inf),
            for_s=table.number("for_s", 0.0, 0, 86_400 * 7),
            severity=table.choice("severity", ("info", "warning", "critical"), "warning"),
            name=table.get("name", str, ""),
        )
    except ValueError as exc:
        raise table.error("above" if above is not None else "below", str(exc)) from None
    table.done()
    return rule


def parse_accounting(root: Table, sources: Mapping[str, Source]) -> AccountingConfig:
    table = root.table("accounting")
    overrides = table.table("factors")
    try:
        library = FactorLibrary.shipped().with_overrides(
            {k: v for k, v in overrides.data.items() if isinstance(v, Mapping)}
        )
    except FactorError as exc:
        raise ConfigError(table.path, table.at("factors"), str(exc)) from None
    for name, value in overrides.data.items():
        overrides.read.add(name)
        if not isinstance(value, Mapping):
            raise overrides.error(name, "must be a table (value, unit, source)")
    grid_factor = table.get("grid_factor", str, DEFAULT_GRID_KEY)
    try:
        grid = library.get(grid_factor)
    except FactorError as exc:
        raise table.error("grid_factor", str(exc)) from None
    if grid.unit != "kgCO2e/kWh":
        raise table.error("grid_factor", f"{grid_factor!r} is per {grid.unit}, not per kWh")
    certificates: dict[str, Decimal] = {}
    green = table.table("green_certificates_kwh")
    for month in green.data:
        if not MONTH.match(month):
            raise green.error(month, 'months are written YYYY-MM, e.g. "2026-11"')
        value = _decimal(green, month, 0, 1e12)
        assert value is not None
        certificates[month] = value
    limit_tables = array(table, "limits")
    limits = [_limit(t, sources) for t in limit_tables]
    sides: set[tuple[str, str, str]] = set()
    for t, rule in zip(limit_tables, limits, strict=True):
        for side, _ in rule.sides():
            if (rule.device, rule.quantity, side) in sides:
                raise t.error(side, f"{rule.device} {rule.quantity} already has a limit {side}")
            sides.add((rule.device, rule.quantity, side))
    meter_tables = array(table, "meters")
    meters = [_meter(t, sources, library) for t in meter_tables]
    seen: set[str] = set()
    for t, meter in zip(meter_tables, meters, strict=True):
        if meter.key in seen:
            raise t.error("quantity", f"{meter.key} is accounted twice")
        seen.add(meter.key)
    minutes = table.integer("interval_min", 15, 1, 60)
    if 60 % minutes:
        raise table.error(
            "interval_min", f"must divide an hour (5, 10, 15, 30, ...), not {minutes}"
        )
    config = AccountingConfig(
        meters=tuple(meters),
        interval_min=minutes,
        grace_s=table.number("grace_s", 120.0, 0, 3600),
        gap_s=table.number("gap_s", 300.0, 1, 86_400),
        power_gap_limit_s=table.number("power_gap_limit_s", 300.0, 1, 86_400),
        revision_days=table.integer("revision_days", 35, 1, 400),
        checkpoint_s=table.number("checkpoint_s", 60.0, 1, 3600),
        offline_after=table.integer("offline_after", 3, 1, 1000),
        grid_factor=grid_factor,
        factors=library,
        green_certificates_kwh=certificates,
        limits=tuple(limits),
    )
    table.done()
    return config
