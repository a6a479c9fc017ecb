import re
from pathlib import Path

from drivers.profile import load_shipped_profile, shipped_profiles
from drivers.vocabulary import vocabulary

DOC = Path(__file__).parent.parent / "docs" / "VOCABULARY.md"


def test_the_document_lists_exactly_the_vocabulary() -> None:
    rows = dict(
        re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]+) \|", DOC.read_text(encoding="utf-8"), re.M)
    )
    assert set(rows) == set(vocabulary())
    for name, q in vocabulary().items():
        assert rows[name].strip() == (q.unit or "-")


def test_names_carry_their_unit_suffix() -> None:
    suffix = {
        "kWh": "_kwh",
        "kvarh": "_kvarh",
        "W": "_w",
        "var": "_var",
        "VA": "_va",
        "V": "_v",
        "A": "_a",
        "Hz": "_hz",
        "m3": "_m3",
        "Nm3": "_nm3",
        "m3/h": "_m3h",
        "Nm3/h": "_nm3h",
        "°C": "_c",
        "kPa": "_kpa",
        "GJ": "_gj",
        "L": "_l",
        "kg": "_kg",
    }
    for name, q in vocabulary().items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
        if q.unit:
            assert name.endswith(suffix[q.unit]), name


def test_every_shipped_profile_loads_and_names_its_source() -> None:
    assert {"eastron_sdm630", "chint_dtsu666"} <= set(shipped_profiles())
    for name in shipped_profiles():
        profile = load_shipped_profile(name)
        assert profile.source and profile.registers
        assert {r.quantity for r in profile.registers} <= set(vocabulary())
