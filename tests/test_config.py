"""Configuration mistakes name the file, the key path and what is wrong; exit 78, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load

EXAMPLE = Path(__file__).parent.parent / "gateway" / "examples" / "gateway.toml"

BASE = """
[gateway]
id = "gw-1"
site = "s1"
data_dir = "data"

[[buses]]
id = "b1"
type = "rtu"
port = "/dev/ttyUSB0"

[[buses]]
id = "b2"
type = "tcp"
host = "10.0.0.1"
"""

DEVICE = '\n[[devices]]\nid = "{id}"\nbus = "b1"\nunit = {unit}\nprofile = "eastron_sdm630"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_loads() -> None:
    config = load(EXAMPLE)
    assert config.gateway_id == "gw-demo-01" and len(config.devices) == 3
    assert config.devices[2].profile.name == "site_meter"  # the inline register map


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    config = load(write(tmp_path, BASE))
    assert config.data_dir == tmp_path / "data"
    assert config.signing_key == tmp_path / "data" / "signing.key"


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            DEVICE.format(id="a", unit=1) * 1
            + DEVICE.format(id="b", unit=1)
            + DEVICE.format(id="c", unit=1)
            + DEVICE.format(id="d", unit=300),
            "devices[3].unit",
            "between 1 and 247",
        ),
        (
            DEVICE.format(id="a", unit=1) + DEVICE.format(id="a", unit=2),
            "devices[1].id",
            "duplicate",
        ),
        (
            DEVICE.format(id="a", unit=1).replace("eastron_sdm630", "nosuch"),
            "devices[0].profile",
            "no profile",
        ),
        (DEVICE.format(id="a", unit=1).replace('"b1"', '"b9"'), "devices[0].bus", "no bus 'b9'"),
        (DEVICE.format(id="a b", unit=1), "devices[0].id", "not a valid identifier"),
        (
            DEVICE.format(id="a", unit=1) + "quantities = ['voltage_l1_v', 'nope_v']\n",
            "devices[0].quantities[1]",
            "has no",
        ),
        (
            DEVICE.format(id="a", unit=1) + "intervall_s = 1\n",
            "devices[0].intervall_s",
            "unknown key",
        ),
        ("\n[mqtt]\nport = 'x'\n", "mqtt.port", "must be an integer"),
        (
            '\n[[buses]]\nid = "b3"\ntype = "rtu"\nport = "/dev/ttyUSB0"\n',
            "buses[2].port",
            "one line is one bus",
        ),
        ("\n[mqtt]\nprotocol = '4'\n", "mqtt.protocol", "must be one of"),
        ("\n[buffer]\nquota_mb = 0\n", "buffer.quota_mb", "between"),
        (
            "\n[profiles.p]\nquantities.voltage_l1_v = { address = 1, function = 5, type = 'f32' }\n",
            "profiles.p.quantities.voltage_l1_v.function",
            "must be 3 or 4",
        ),
        (
            "\n[profiles.p]\nquantities.volts = { address = 1, function = 4, type = 'f32' }\n",
            "profiles.p.quantities.volts",
            "vocabulary",
        ),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, extra: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, BASE + extra))
    assert caught.value.key == key
    assert message in caught.value.message
    assert str(tmp_path / "gateway.toml") in str(caught.value)


def test_bad_timezone_and_toml_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gateway.timezone: unknown time zone"):
        load(write(tmp_path, BASE.replace('site = "s1"', 'site = "s1"\ntimezone = "Mars/Olympus"')))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, BASE + "\n[[devices]\n"))


def test_cli_exits_78_with_one_clear_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + DEVICE.format(id="a", unit=0))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert f"{path}: devices[0].unit: must be between 1 and 247, not 0" in result.stderr


def test_cli_missing_config_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "status", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        result.returncode == 78
        and "no such file" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_commands_need_a_valid_pinned_key(tmp_path: Path) -> None:
    from buffer.keys import public_key_text
    from gateway.config import ConfigError, loads
    from tests.support.keys import make_signer

    base = '[gateway]\nid = "gw"\nsite = "s"\n[mqtt]\nenabled = false\n'
    assert not loads(base, tmp_path / "g.toml").commands.enabled
    key = public_key_text(make_signer(tmp_path).public)
    (tmp_path / "platform.pub").write_text(f"{key}\n")
    config = loads(base + '[commands]\nplatform_key_file = "platform.pub"\n', tmp_path / "g.toml")
    assert config.commands.enabled and config.commands.platform_keys == (key,)
    with pytest.raises(ConfigError, match=r"commands.platform_keys\[0\]: not an Ed25519"):
        loads(base + '[commands]\nplatform_keys = ["abc"]\n', tmp_path / "g.toml")
    with pytest.raises(ConfigError, match=r"commands\.platform_key_file: cannot read"):
        loads(base + '[commands]\nplatform_key_file = "none.pub"\n', tmp_path / "g.toml")
    with pytest.raises(ConfigError, match=r"commands\.probation_s: must be between 10 and 3600"):
        loads(base + "[commands]\nprobation_s = 1\n", tmp_path / "g.toml")
