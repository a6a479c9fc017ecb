"""Emission factors, standard-coal equivalents and GWPs: the shipped table plus site overrides.

The data lives in factors.toml next to this module (docs/FACTORS.md lists it). Values are Decimal
end to end, and every Factor carries its source and confidence so that a published interval
result says which factor produced it.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

CARRIERS = ("electricity", "natural_gas", "diesel", "gasoline", "lpg", "heat", "steam", "water")
SERIES = ("mee-nbs-statistical", "carbon-market")
REGIONS = (
    "national",
    "national-excl-market-non-fossil",
    "national-fossil",
    "north",
    "northeast",
    "east",
    "central",
    "northwest",
    "south",
    "southwest",
)
CONFIDENCES = ("H", "M-H", "M", "M-L", "L-M", "L", "site")
# The latest data year of the statistical (MEE/NBS) series, national average: that series is the
# one published for general enterprise and product accounting. The carbon-market figure belongs to
# the power-generator reporting notice and is only right where that reporting asks for it; a site
# on a regional grid or with a supply contract picks or adds its own key.
DEFAULT_GRID_KEY = "grid/mee-nbs-statistical/2023/national"

# The quantity each carrier is metered in: its emission and coal factors must both be per this.
CARRIER_UNITS = {
    "electricity": "kWh",
    "natural_gas": "Nm3",
    "diesel": "kg",
    "gasoline": "kg",
    "lpg": "kg",
    "heat": "GJ",
    "steam": "GJ",
    "water": "m3",
}
_EMISSION_KEYS = {
    "natural_gas": "fuel/natural_gas",
    "diesel": "fuel/diesel",
    "gasoline": "fuel/gasoline",
    "lpg": "fuel/lpg",
    "heat": "heat/purchased",
    "steam": "heat/purchased",
    "water": "water/supply",
}
_COAL_KEYS = {c: f"coal/{c}" for c in CARRIERS} | {"steam": "coal/heat"}
# NCV unit -> (quantity the NCV refers to, in units of the fuel's metered unit; metered unit).
_NCV_UNITS = {"GJ/10^4 Nm3": (Decimal(10000), "Nm3"), "GJ/t": (Decimal(1000), "kg")}
_FUEL_PLACES = Decimal("0.000001")
_OVERRIDE_FIELDS = frozenset({"value", "unit", "source", "confidence"})
# Namespace of a key a site adds -> pattern its unit must match.
_NEW_KEY_UNITS = {
    "grid": re.compile(r"kgCO2e/kWh"),
    "gwp": re.compile(r"kgCO2e/kg"),
    "coal": re.compile(r"kgce/\S+"),
    "fuel": re.compile(r"kgCO2e/\S+"),
    "heat": re.compile(r"kgCO2e/\S+"),
    "water": re.compile(r"kgCO2e/\S+"),
}
_GRID_KEY = re.compile(r"grid/[a-z0-9-]+/\d{4}/[a-z0-9-]+")
_KEY = re.compile(r"[a-z]+/[A-Za-z0-9._/-]+")


class FactorError(ValueError):
    """A factor is unknown, malformed or does not fit where it is used; the message names it."""


@dataclass(frozen=True)
class Factor:
    key: str
    value: Decimal
    unit: str
    source: str
    confidence: str

    def as_record(self) -> dict[str, object]:
        return {
            "key": self.key,
            "value": float(self.value),
            "unit": self.unit,
            "source": self.source,
            "confidence": self.confidence,
        }


class FactorLibrary:
    def __init__(self, factors: Mapping[str, Factor], excluded: Mapping[str, str]) -> None:
        self._factors = MappingProxyType(dict(factors))
        self._excluded = MappingProxyType(dict(excluded))

    @classmethod
    def shipped(cls) -> FactorLibrary:
        return _shipped()

    @classmethod
    def from_toml(cls, text: str) -> FactorLibrary:
        try:
            data = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise FactorError(f"factors.toml: {exc}") from exc
        return _parse(data)

    @property
    def excluded(self) -> Mapping[str, str]:
        """Carriers outside accounting by default -> why."""
        return self._excluded

    def keys(self) -> list[str]:
        return sorted(self._factors)

    def get(self, key: str) -> Factor:
        try:
            return self._factors[key]
        except KeyError:
            raise FactorError(_unknown(key, self._factors)) from None

    def grid(self, series: str, year: int, region: str) -> Factor:
        return self.get(f"grid/{series}/{year}/{region}")

    def emission(self, carrier: str, grid_key: str) -> Factor | None:
        """kgCO2e per metered unit of `carrier`; None for a carrier excluded by default."""
        if carrier == "electricity":
            if not grid_key.startswith("grid/"):
                raise FactorError(f"factor {grid_key!r}: not a grid factor (keys start 'grid/')")
            return self._for_carrier(carrier, grid_key, "kgCO2e")
        return self._for_carrier(carrier, _EMISSION_KEYS.get(carrier, ""), "kgCO2e")

    def coal(self, carrier: str) -> Factor | None:
        """kgce per metered unit of `carrier`; None for a carrier excluded by default."""
        return self._for_carrier(carrier, _COAL_KEYS.get(carrier, ""), "kgce")

    def gwp(self, gas: str) -> Factor:
        key = f"gwp/{gas}"
        if key in self._factors:
            return self._factors[key]
        folded = {k.casefold(): k for k in self._factors if k.startswith("gwp/")}
        if key.casefold() in folded:
            return self._factors[folded[key.casefold()]]
        raise FactorError(_unknown(key, self._factors))

    def with_overrides(self, overrides: Mapping[str, Mapping[str, object]]) -> FactorLibrary:
        """A copy with site factors replacing or adding entries by key."""
        factors = dict(self._factors)
        for key, fields in overrides.items():
            factors[key] = _override(key, fields, factors.get(key))
        return FactorLibrary(factors, self._excluded)

    def _for_carrier(self, carrier: str, key: str, numerator: str) -> Factor | None:
        if carrier not in CARRIER_UNITS:
            raise FactorError(f"unknown carrier {carrier!r}; carriers: {', '.join(CARRIERS)}")
        if key not in self._factors and carrier in self._excluded:
            return None
        factor = self.get(key)
        expected = f"{numerator}/{CARRIER_UNITS[carrier]}"
        if factor.unit != expected:
            raise FactorError(
                f"factor {key!r}: unit {factor.unit!r} does not fit {carrier}, "
                f"which is metered in {CARRIER_UNITS[carrier]}; expected {expected!r}"
            )
        return factor


def fuel_emission(
    ncv: Decimal, ncv_unit: str, carbon_content: Decimal, oxidation: Decimal
) -> tuple[Decimal, str]:
    """kgCO2 per metered unit = NCV x carbon content (tC/TJ) x oxidation x 44/12, and that unit."""
    per, unit = _NCV_UNITS[ncv_unit]
    # GJ per `per` units x 1e-3 TJ/GJ x tC/TJ x 1e3 kg/t: the two 1e3 factors cancel.
    value = ncv / per * carbon_content * oxidation * Decimal(44) / Decimal(12)
    return value.quantize(_FUEL_PLACES), unit


@cache
def _shipped() -> FactorLibrary:
    text = resources.files(__package__ or "gateway.accounting").joinpath("factors.toml")
    return FactorLibrary.from_toml(text.read_text(encoding="utf-8"))


def _parse(data: Mapping[str, Any]) -> FactorLibrary:
    _only(data, "factors.toml", {"grid", "fuel", "heat", "coal", "excluded", "gwp"})
    factors: dict[str, Factor] = {}

    def add(factor: Factor) -> None:
        if factor.key in factors:
            raise FactorError(f"factor {factor.key!r}: defined twice in factors.toml")
        factors[factor.key] = factor

    for entry in data.get("grid", []):
        _only(
            entry, "grid entry", {"series", "data_year", "region", "value", "source", "confidence"}
        )
        key = f"grid/{entry.get('series')}/{entry.get('data_year')}/{entry.get('region')}"
        if entry.get("series") not in SERIES or entry.get("region") not in REGIONS:
            raise FactorError(
                f"factor {key!r}: series must be one of {SERIES}, region of {REGIONS}"
            )
        add(_factor(key, {**entry, "unit": "kgCO2e/kWh"}))
    for name, entry in data.get("fuel", {}).items():
        key = f"fuel/{name}"
        _only(
            entry, key, {"ncv", "ncv_unit", "carbon_content", "oxidation", "source", "confidence"}
        )
        if entry.get("ncv_unit") not in _NCV_UNITS:
            raise FactorError(f"factor {key!r}: ncv_unit must be one of {sorted(_NCV_UNITS)}")
        parts = [_number(key, entry.get(f)) for f in ("ncv", "carbon_content", "oxidation")]
        if not all(parts) or parts[2] > 1:
            raise FactorError(f"factor {key!r}: ncv and carbon_content > 0, 0 < oxidation <= 1")
        value, unit = fuel_emission(parts[0], entry["ncv_unit"], parts[1], parts[2])
        source = f"{entry.get('source')} (computed: NCV x C x oxidation x 44/12)"
        add(_factor(key, {**entry, "value": value, "unit": f"kgCO2e/{unit}", "source": source}))
    for section in ("heat", "coal"):
        for name, entry in data.get(section, {}).items():
            key = f"{section}/{name}"
            _only(entry, key, {"value", "unit", "source", "confidence"})
            add(_factor(key, entry))
    gwp = data.get("gwp", {})
    _only(gwp, "gwp", {"source", "confidence", "values"})
    for gas, value in gwp.get("values", {}).items():
        add(_factor(f"gwp/{gas}", {**gwp, "value": value, "unit": "kgCO2e/kg"}))
    excluded = {}
    for carrier, entry in data.get("excluded", {}).items():
        _only(entry, f"excluded.{carrier}", {"reason", "source"})
        if carrier not in CARRIERS or not entry.get("reason"):
            raise FactorError(f"excluded.{carrier}: must be a carrier and give a reason")
        excluded[carrier] = f"{entry['reason']} ({entry.get('source', 'no source')})"
    return FactorLibrary(factors, excluded)


def _factor(key: str, entry: Mapping[str, Any]) -> Factor:
    confidence = entry.get("confidence")
    if confidence not in CONFIDENCES or confidence == "site":
        raise FactorError(f"factor {key!r}: confidence must be one of {CONFIDENCES[:-1]}")
    source, unit = entry.get("source"), entry.get("unit")
    if not (isinstance(source, str) and source and isinstance(unit, str) and unit):
        raise FactorError(f"factor {key!r}: needs a unit and a source")
    return Factor(key, _number(key, entry.get("value")), unit, source, confidence)


def _override(key: str, fields: object, current: Factor | None) -> Factor:
    if not isinstance(fields, Mapping):
        raise FactorError(f"factor {key!r}: an override is a table of {sorted(_OVERRIDE_FIELDS)}")
    _only(fields, f"factor {key!r}", _OVERRIDE_FIELDS)
    if "value" not in fields:
        raise FactorError(f"factor {key!r}: an override needs a value")
    value = _number(key, fields["value"])
    source = fields.get("source")
    if not isinstance(source, str) or not source.strip():
        raise FactorError(
            f"factor {key!r}: an override needs a source (where the value comes from)"
        )
    confidence = fields.get("confidence", "site")
    if confidence not in CONFIDENCES:
        raise FactorError(f"factor {key!r}: confidence must be one of {CONFIDENCES}")
    unit = fields.get("unit")
    if current is not None:
        if unit is not None and unit != current.unit:
            raise FactorError(
                f"factor {key!r}: unit cannot change from {current.unit!r} to {unit!r}"
            )
        unit = current.unit
    else:
        _check_new_key(key, unit)
    assert isinstance(unit, str) and isinstance(confidence, str)
    return Factor(key, value, unit, source.strip(), confidence)


def _check_new_key(key: str, unit: object) -> None:
    namespace = key.split("/", 1)[0]
    if not _KEY.fullmatch(key) or namespace not in _NEW_KEY_UNITS:
        raise FactorError(
            f"factor {key!r}: unknown key; a new key starts with one of "
            f"{', '.join(f'{n}/' for n in _NEW_KEY_UNITS)}"
        )
    if namespace == "grid" and not _GRID_KEY.fullmatch(key):
        raise FactorError(f"factor {key!r}: a grid key is grid/<series>/<year>/<region>")
    if not isinstance(unit, str) or not _NEW_KEY_UNITS[namespace].fullmatch(unit):
        raise FactorError(
            f"factor {key!r}: a new key needs a unit matching "
            f"{_NEW_KEY_UNITS[namespace].pattern!r}, got {unit!r}"
        )


def _number(key: str, raw: object) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal):
        raise FactorError(f"factor {key!r}: value must be a number, got {raw!r}")
    value = raw if isinstance(raw, Decimal) else Decimal(str(raw))
    if not value.is_finite() or value < 0:
        raise FactorError(f"factor {key!r}: value must be finite and >= 0, got {raw!r}")
    return value


def _only(entry: object, where: str, allowed: set[str] | frozenset[str]) -> None:
    if not isinstance(entry, Mapping):
        raise FactorError(f"{where}: must be a table")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise FactorError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _unknown(key: str, known: Mapping[str, Factor]) -> str:
    close = difflib.get_close_matches(key, list(known), n=5, cutoff=0.6)
    hint = f"close keys: {', '.join(close)}" if close else "see docs/FACTORS.md for the keys"
    return f"unknown factor key {key!r}; {hint}"
