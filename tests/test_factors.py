"""The factor library: shipped data against the reference facts, lookups, overrides, docs."""

from __future__ import annotations

import math
import re
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.accounting.factors import (
    CARRIER_UNITS,
    CARRIERS,
    CONFIDENCES,
    DEFAULT_GRID_KEY,
    Factor,
    FactorError,
    FactorLibrary,
)

ROOT = Path(__file__).resolve().parent.parent
TOML = ROOT / "gateway" / "accounting" / "factors.toml"
LIB = FactorLibrary.shipped()
KEYS = LIB.keys()


@pytest.mark.parametrize(
    ("key", "unit", "published"),
    [
        ("fuel/natural_gas", "kgCO2e/Nm3", "2.1622"),
        ("fuel/diesel", "kgCO2e/kg", "3.0959"),
        ("fuel/gasoline", "kgCO2e/kg", "2.9251"),
        ("fuel/lpg", "kgCO2e/kg", "3.1013"),
    ],
)
def test_fuel_factors_reproduce_the_guideline(key: str, unit: str, published: str) -> None:
    factor = LIB.get(key)
    assert factor.unit == unit
    assert factor.value.quantize(Decimal("0.0001")) == Decimal(published)
    assert "computed" in factor.source and factor.confidence == "M-H"


def test_every_factor_is_complete_and_sane() -> None:
    assert len(KEYS) == len(set(KEYS)) >= 70
    for key in KEYS:
        f = LIB.get(key)
        assert f.key == key
        assert isinstance(f.value, Decimal) and f.value.is_finite() and f.value >= 0, key
        assert f.source.strip() and f.unit.strip(), key
        assert f.confidence in CONFIDENCES and f.confidence != "site", key
        record = f.as_record()
        assert set(record) == {"key", "value", "unit", "source", "confidence"}
        assert isinstance(record["value"], float) and math.isclose(record["value"], float(f.value))


def test_shipped_is_parsed_once() -> None:
    assert FactorLibrary.shipped() is FactorLibrary.shipped()


def test_grid_lookup_keeps_series_apart() -> None:
    assert LIB.grid("mee-nbs-statistical", 2023, "national").value == Decimal("0.5306")
    assert LIB.grid("mee-nbs-statistical", 2021, "national").value == Decimal("0.5568")
    assert LIB.grid("mee-nbs-statistical", 2022, "national-excl-market-non-fossil").value == (
        Decimal("0.5856")
    )
    assert LIB.grid("mee-nbs-statistical", 2023, "national-fossil").value == Decimal("0.8273")
    assert LIB.grid("mee-nbs-statistical", 2022, "north").value == Decimal("0.6776")
    assert LIB.grid("mee-nbs-statistical", 2023, "southwest").value == Decimal("0.2472")
    assert LIB.grid("mee-nbs-statistical", 2023, "south").confidence == "M-H"
    market = LIB.grid("carbon-market", 2022, "national")
    assert market.value == Decimal("0.5703") and "2022" in market.source
    # The carbon-market value is a 2022 figure; there is no 2021 one to confuse it with.
    with pytest.raises(FactorError, match="grid/carbon-market/2021/national"):
        LIB.grid("carbon-market", 2021, "national")
    grid_keys = [k for k in KEYS if k.startswith("grid/")]
    assert all(LIB.get(k).unit == "kgCO2e/kWh" for k in grid_keys)
    assert len(grid_keys) == 23


def test_unknown_key_names_it_and_suggests_close_ones() -> None:
    with pytest.raises(FactorError) as info:
        LIB.grid("mee-nbs-statistical", 2024, "national")
    message = str(info.value)
    assert "grid/mee-nbs-statistical/2024/national" in message
    assert "grid/mee-nbs-statistical/2023/national" in message


def test_default_grid_key_is_latest_statistical_national() -> None:
    years = [int(k.split("/")[2]) for k in KEYS if k.startswith("grid/mee-nbs-statistical/")]
    assert f"grid/mee-nbs-statistical/{max(years)}/national" == DEFAULT_GRID_KEY
    assert LIB.emission("electricity", DEFAULT_GRID_KEY) == LIB.get(DEFAULT_GRID_KEY)


def test_emission_and_coal_per_carrier() -> None:
    for carrier in CARRIERS:
        emission = LIB.emission(carrier, DEFAULT_GRID_KEY)
        coal = LIB.coal(carrier)
        if carrier == "water":
            assert emission is None and coal is None
            continue
        assert emission is not None and coal is not None, carrier
        # Both per the carrier's metered unit, so one quantity feeds both.
        assert emission.unit == f"kgCO2e/{CARRIER_UNITS[carrier]}"
        assert coal.unit == f"kgce/{CARRIER_UNITS[carrier]}"
    assert LIB.emission("steam", DEFAULT_GRID_KEY) == LIB.emission("heat", DEFAULT_GRID_KEY)
    assert LIB.get("heat/purchased").value == Decimal("110")  # 0.11 tCO2/GJ
    assert LIB.get("coal/heat").value == Decimal("34.12")  # 0.03412 kgce/MJ
    assert "water" in LIB.excluded


@pytest.mark.parametrize(
    ("key", "value", "confidence"),
    [
        ("coal/electricity", "0.1229", "H"),
        ("coal/diesel", "1.4571", "H"),
        ("coal/gasoline", "1.4714", "H"),
        ("coal/natural_gas", "1.2143", "L"),
        ("coal/natural_gas/upper", "1.3300", "L"),
        ("coal/lpg", "1.7143", "M-L"),
    ],
)
def test_standard_coal(key: str, value: str, confidence: str) -> None:
    factor = LIB.get(key)
    assert (factor.value, factor.confidence) == (Decimal(value), confidence)
    assert "GB/T 2589-2020" in factor.source


def test_emission_refuses_bad_carrier_and_non_grid_key() -> None:
    with pytest.raises(FactorError, match="'coal'"):
        LIB.emission("coal", DEFAULT_GRID_KEY)
    with pytest.raises(FactorError, match="'fuel/diesel'"):
        LIB.emission("electricity", "fuel/diesel")


@pytest.mark.parametrize(
    ("gas", "value"),
    [
        ("CO2", "1"),
        ("CH4", "27.9"),
        ("N2O", "273"),
        ("HFC-23", "14600"),
        ("HFC-134a", "1530"),
        ("HFC-161", "4.84"),
        ("HFC-43-10mee", "1600"),
        ("PFC-14", "7380"),
        ("PFC-51-14", "8620"),
        ("SF6", "25200"),
        ("R22", "1960"),
        ("R404A", "1896.08"),
        ("r32", "771"),
        ("R290", "0.02"),
        ("R717", "0"),
    ],
)
def test_gwp(gas: str, value: str) -> None:
    factor = LIB.gwp(gas)
    assert factor.value == Decimal(value) and factor.unit == "kgCO2e/kg"


def test_gwp_table_is_complete() -> None:
    hfcs = "23 32 41 125 134 134a 143 143a 152 152a 161 227ea 236cb 236ea 236fa 245ca 245fa"
    pfcs = "116 14 218 318 31-10 41-12 51-14"
    expected = (
        {"CO2", "CH4", "N2O", "SF6", "HFC-365mfc", "HFC-43-10mee"}
        | {f"HFC-{n}" for n in hfcs.split()}
        | {f"PFC-{n}" for n in pfcs.split()}
        | {"R22", "R404A", "R134a", "R32", "R290", "R717"}
    )
    assert {k.removeprefix("gwp/") for k in KEYS if k.startswith("gwp/")} == expected
    with pytest.raises(FactorError, match="gwp/HFC-999"):
        LIB.gwp("HFC-999")


def test_override_replaces_with_site_confidence() -> None:
    site = LIB.with_overrides(
        {DEFAULT_GRID_KEY: {"value": 0.55, "source": "contract with the utility"}}
    )
    factor = site.get(DEFAULT_GRID_KEY)
    assert factor == Factor(
        DEFAULT_GRID_KEY, Decimal("0.55"), "kgCO2e/kWh", "contract with the utility", "site"
    )
    assert LIB.get(DEFAULT_GRID_KEY).value == Decimal("0.5306")  # the shipped library is untouched


def test_override_adds_a_key_usable_for_electricity() -> None:
    key = "grid/site/2026/ppa"
    site = LIB.with_overrides(
        {key: {"value": 0, "unit": "kgCO2e/kWh", "source": "green PPA 2026", "confidence": "M"}}
    )
    assert site.grid("site", 2026, "ppa").confidence == "M"
    assert site.emission("electricity", key) == site.get(key)
    assert key not in KEYS


def test_override_can_bring_water_into_scope() -> None:
    site = LIB.with_overrides({"coal/water": {"value": 0.0857, "unit": "kgce/m3", "source": "x"}})
    coal = site.coal("water")
    assert coal is not None and coal.value == Decimal("0.0857")
    assert site.emission("water", DEFAULT_GRID_KEY) is None


@pytest.mark.parametrize(
    ("key", "fields", "pattern"),
    [
        (DEFAULT_GRID_KEY, {"value": -0.1, "source": "s"}, ">= 0"),
        (DEFAULT_GRID_KEY, {"value": float("nan"), "source": "s"}, "finite"),
        (DEFAULT_GRID_KEY, {"value": float("inf"), "source": "s"}, "finite"),
        (DEFAULT_GRID_KEY, {"value": "0.5", "source": "s"}, "number"),
        (DEFAULT_GRID_KEY, {"value": True, "source": "s"}, "number"),
        (DEFAULT_GRID_KEY, {"source": "s"}, "needs a value"),
        (DEFAULT_GRID_KEY, {"value": 0.5}, "needs a source"),
        (
            DEFAULT_GRID_KEY,
            {"value": 0.5, "source": "s", "unit": "kgCO2e/MWh"},
            "unit cannot change",
        ),
        (DEFAULT_GRID_KEY, {"value": 0.5, "source": "s", "year": 2024}, "unknown field.*year"),
        (DEFAULT_GRID_KEY, {"value": 0.5, "source": "s", "confidence": "high"}, "confidence"),
        ("grid/site/2026/ppa", {"value": 0.1, "source": "s"}, "unit"),
        ("grid/site/2026/ppa", {"value": 0.1, "unit": "kgCO2e/MWh", "source": "s"}, "unit"),
        ("grid/site/ppa", {"value": 0.1, "unit": "kgCO2e/kWh", "source": "s"}, "<series>/<year>"),
        ("power/site", {"value": 0.1, "unit": "kgCO2e/kWh", "source": "s"}, "starts with"),
        ("coal/water", {"value": 0.1, "unit": "kgCO2e/m3", "source": "s"}, "unit"),
    ],
)
def test_bad_override_is_refused_naming_the_key(
    key: str, fields: dict[str, object], pattern: str
) -> None:
    with pytest.raises(FactorError, match=pattern) as info:
        LIB.with_overrides({key: fields})
    assert repr(key) in str(info.value)


def test_added_factor_with_a_unit_that_does_not_fit_the_carrier_is_refused_on_use() -> None:
    site = LIB.with_overrides({"water/supply": {"value": 1, "unit": "kgCO2e/kg", "source": "s"}})
    with pytest.raises(FactorError, match=r"'water/supply'.*expected 'kgCO2e/m3'"):
        site.emission("water", DEFAULT_GRID_KEY)


def test_shipped_file_validation() -> None:
    text = TOML.read_text(encoding="utf-8")
    with pytest.raises(FactorError, match="coal/diesel"):
        FactorLibrary.from_toml(text.replace('source = "GB/T 2589-2020, diesel"', 'source = ""'))
    with pytest.raises(FactorError, match="grid/mee-nbs-statistical/2021/national"):
        FactorLibrary.from_toml(text.replace("value = 0.5568", "value = -0.5568"))
    with pytest.raises(FactorError, match="region"):
        FactorLibrary.from_toml(text.replace('region = "southwest"', 'region = "tibet"', 1))


def test_docs_table_matches_the_shipped_data() -> None:
    doc = (ROOT / "docs" / "FACTORS.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        match = re.match(r"\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", line)
        if match and "/" in match[1]:
            rows[match[1]] = (match[2].strip(), match[3].strip(), match[4].strip())
    # Key sets equal both ways: nothing undocumented, nothing documented that is not shipped.
    assert set(rows) == set(KEYS)
    for key in KEYS:
        f = LIB.get(key)
        assert rows[key] == (format(f.value, "f"), f.unit, f.confidence), key


def test_toml_keys_are_all_loaded() -> None:
    data = tomllib.loads(TOML.read_text(encoding="utf-8"))
    count = (
        len(data["grid"])
        + len(data["fuel"])
        + len(data["heat"])
        + len(data["coal"])
        + len(data["gwp"]["values"])
    )
    assert count == len(KEYS)
