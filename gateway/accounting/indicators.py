"""Site indicators from the meters' totals over one period (the specifications in docs/ACCOUNTING.md).

Only boundary meters make the site's totals: grid import and export, on-site generation (PV, wind)
and `supply` meters of fuels, heat and water. Sub-meters (`load`) attribute energy to loads and
are never added on top, or the site would count the same kWh twice.

- consumption EC = grid import + on-site generation - export
- self-consumed renewable = generation - export, per interval (export comes out of generation
  first), never below 0; a period's value is the sum over its intervals
- renewable-electricity share (T/CACE A.1) = (self-consumed renewable + green certificates) / EC
- renewable utilisation (T/CMES B.1) = renewable kgce / total kgce
- intensity per unit product (T/CMES B.6) = kWh, kgce, kgCO2e / units from production counters
- completeness = readings received / expected, per device; the upload rate must be >= 90 %
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from gateway.accounting.settings import MeterConfig

UPLOAD_RATE_REQUIRED = Decimal("0.9")
GENERATION_ROLES = ("pv", "wind")
KWH = Decimal("0.000001")
KG = Decimal("0.001")
RATIO = Decimal("0.000001")


@dataclass(frozen=True)
class MeterTotal:
    meter: MeterConfig
    amount: Decimal  # in the carrier's unit (products for a production counter)
    kwh: Decimal | None
    kgco2e: Decimal
    kgce: Decimal
    readings: int
    expected: int


def self_consumed(
    intervals: Iterable[Mapping[str, Decimal]], meters: Sequence[MeterConfig]
) -> Decimal:
    """Sum over intervals of max(0, generation - export); each mapping is meter key -> kWh."""
    generation = [m.key for m in meters if m.role in GENERATION_ROLES]
    export = [m.key for m in meters if m.role == "grid_export"]
    total = Decimal(0)
    for kwh in intervals:
        produced = sum((kwh.get(k, Decimal(0)) for k in generation), Decimal(0))
        exported = sum((kwh.get(k, Decimal(0)) for k in export), Decimal(0))
        total += max(Decimal(0), produced - exported)
    return total


def _sum(values: Iterable[Decimal]) -> Decimal:
    return sum(values, Decimal(0))


def _ratio(part: Decimal, whole: Decimal) -> float | None:
    return float((part / whole).quantize(RATIO)) if whole > 0 else None


def completeness(totals: Sequence[MeterTotal]) -> dict[str, object]:
    """Readings received / expected over the devices (one count per device, capped at expected)."""
    by_device: dict[str, tuple[int, int]] = {}
    for t in totals:
        received, expected = by_device.get(t.meter.device, (0, 0))
        by_device[t.meter.device] = (max(received, t.readings), max(expected, t.expected))
    received = sum(min(r, e) for r, e in by_device.values())
    expected = sum(e for _, e in by_device.values())
    rate = _ratio(Decimal(received), Decimal(expected))
    return {
        "received": received,
        "expected": expected,
        "rate": rate,
        "meets_required": rate is not None and rate >= UPLOAD_RATE_REQUIRED,
        "devices": {
            device: _ratio(Decimal(min(r, e)), Decimal(e))
            for device, (r, e) in sorted(by_device.items())
        },
    }


def site_indicators(
    totals: Sequence[MeterTotal],
    self_consumed_kwh: Decimal,
    electricity_kgce_per_kwh: Decimal,
    green_certificates_kwh: Decimal | None = None,
) -> dict[str, object]:
    def kwh(*roles: str) -> Decimal:
        return _sum(t.kwh or Decimal(0) for t in totals if t.meter.role in roles)

    grid_import, export = kwh("grid_import"), kwh("grid_export")
    generation = kwh(*GENERATION_ROLES)
    self_used = min(self_consumed_kwh, generation)
    consumption = max(Decimal(0), grid_import + generation - export)
    green = green_certificates_kwh or Decimal(0)
    supply = [t for t in totals if t.meter.role == "supply"]
    scope = {
        s: _sum(
            t.kgco2e
            for t in totals
            if t.meter.scope == s and t.meter.role in ("grid_import", "supply")
        )
        for s in (1, 2, 3)
    }
    kgce = consumption * electricity_kgce_per_kwh + _sum(t.kgce for t in supply)
    renewable_kgce = self_used * electricity_kgce_per_kwh
    co2e = scope[1] + scope[2] + scope[3]
    units = _sum(t.amount for t in totals if t.meter.role == "production")
    result: dict[str, object] = {
        "electricity": {
            "grid_import_kwh": float(grid_import.quantize(KWH)),
            "grid_export_kwh": float(export.quantize(KWH)),
            "generation_kwh": float(generation.quantize(KWH)),
            "self_consumed_kwh": float(self_used.quantize(KWH)),
            "consumption_kwh": float(consumption.quantize(KWH)),
            "green_certificates_kwh": float(green.quantize(KWH)),
            "renewable_share": _ratio(self_used + green, consumption),
        },
        "co2e": {
            "scope1_kg": float(scope[1].quantize(KG)),
            "scope2_kg": float(scope[2].quantize(KG)),
            "scope3_kg": float(scope[3].quantize(KG)),
            "total_kg": float(co2e.quantize(KG)),
        },
        "standard_coal": {
            "kgce": float(kgce.quantize(KG)),
            "tce": float((kgce / 1000).quantize(Decimal("0.000001"))),
            "renewable_kgce": float(renewable_kgce.quantize(KG)),
            "renewable_utilisation": _ratio(renewable_kgce, kgce),
        },
        "completeness": completeness(totals),
    }
    if any(t.meter.role == "production" for t in totals):
        result["production"] = {
            "units": float(units),
            "kwh_per_unit": _ratio(consumption, units),
            "kgce_per_unit": _ratio(kgce, units),
            "kgco2e_per_unit": _ratio(co2e, units),
        }
    return result
