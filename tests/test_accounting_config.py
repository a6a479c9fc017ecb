"""The [accounting] section: mistakes are refused at load, naming the file and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse

BASE = """
[gateway]
id = "gw"
site = "s"
[mqtt]
enabled = false
[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
[[devices]]
id = "m"
bus = "lan"
unit = 1
profile = "eastron_sdm630"
[[pulse_inputs]]
id = "gas"
source = "emulated"
quantity = "gas_volume_m3"
pulses_per_unit = 100
"""


def load(tmp_path: Path, accounting: str) -> object:
    return parse(tomllib.loads(BASE + accounting), tmp_path / "gateway.toml")


@pytest.mark.parametrize(
    ("accounting", "key", "words"),
    [
        (
            '[[accounting.meters]]\ndevice = "m"\nrole = "load"\ndaily_budget_kwh = 0\n',
            "accounting.meters[0].daily_budget_kwh",
            "between",
        ),
        (
            '[[accounting.meters]]\ndevice = "m"\nrole = "supply"\ncarrier = "electricity"\n',
            "accounting.meters[0].carrier",
            "grid_import",
        ),
        (
            '[[accounting.meters]]\ndevice = "m"\nrole = "load"\nemission_factor = "fuel/diesel"\n',
            "accounting.meters[0].emission_factor",
            "kgCO2e/kWh",
        ),
        (
            '[[accounting.meters]]\ndevice = "gas"\nrole = "supply"\ncarrier = "natural_gas"\n',
            "accounting.meters[0].conversion",
            "line_temperature_c",
        ),
        (
            '[[accounting.meters]]\ndevice = "nope"\nrole = "load"\n',
            "accounting.meters[0].device",
            "not a device",
        ),
        (
            '[[accounting.limits]]\ndevice = "m"\nquantity = "active_power_w"\nabove = 1\n'
            '[[accounting.limits]]\ndevice = "m"\nquantity = "active_power_w"\nabove = 2\n',
            "accounting.limits[1].above",
            "already has a limit above",
        ),
        ("[accounting]\ninterval_min = 7\n", "accounting.interval_min", "divide an hour"),
        ('[accounting]\ngrid_factor = "coal/electricity"\n', "accounting.grid_factor", "per kgce"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, accounting: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, accounting)
    assert caught.value.key == key and words in caught.value.message, caught.value


def test_gas_at_line_conditions_converts_to_normal_cubic_metres(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[accounting.meters]]\ndevice = "gas"\nrole = "supply"\ncarrier = "natural_gas"\n'
        "line_temperature_c = 15\nline_pressure_kpa = 110\n",
    )
    meter = config.accounting.meters[0]  # type: ignore[attr-defined]
    # (110 / 101.325) x (273.15 / 288.15)
    assert abs(float(meter.conversion) - 1.0291025) < 1e-6
    assert (meter.source, meter.scope, meter.carrier_unit) == ("pulse", 1, "Nm3")
