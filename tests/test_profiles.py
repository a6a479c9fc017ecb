"""The shipped meter library: every profile loads, is sourced, decodes its golden frame and is
served by the emulator; the profile format's newer keys (invalid, reads, identify) are checked."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from drivers.codec import decode
from drivers.emulation.meter import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    EmulatedMeter,
    MeterException,
)
from drivers.modbus import _snapshot
from drivers.plan import plan_profile
from drivers.profile import (
    ProfileError,
    load_shipped_profile,
    profile_from_mapping,
    shipped_profiles,
)
from drivers.snapshot import FLAG_INVALID, OUT_OF_RANGE
from drivers.vocabulary import vocabulary

GOLDEN = tomllib.loads(
    (Path(__file__).parent / "data" / "golden_frames.toml").read_text(encoding="utf-8")
)
PROFILES = shipped_profiles()
FIXED_TIME = 1_700_000_000.0


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS computed bytewise from a table (the emulator and test_codec use bit loops)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def test_the_library_has_the_families_the_issue_names() -> None:
    assert len(PROFILES) >= 20
    for wanted in (
        "eastron_sdm630",
        "eastron_sdm230",
        "eastron_sdm120",
        "eastron_sdm72d_m_v2",
        "chint_dtsu666",
        "chint_dtsu666_h",
        "chint_ddsu666",
        "acrel_adw300",
        "schneider_iem3x55",
        "abb_b23",
        "janitza_umg96rm",
        "carlo_gavazzi_em24",
        "socomec_countis_e3x",
        "tuf2000m_water",
        "fx_gas_flow_totalizer",
        "generic_pulse_counter_8ch",
    ):
        assert wanted in PROFILES


def test_the_dtsu666_variants_differ_where_the_sources_do() -> None:
    plain = {r.quantity: r.address for r in load_shipped_profile("chint_dtsu666").registers}
    variant = {r.quantity: r.address for r in load_shipped_profile("chint_dtsu666_h").registers}
    assert (plain["active_energy_import_kwh"], plain["active_energy_export_kwh"]) == (
        0x101E,
        0x1028,
    )
    assert (variant["active_energy_import_kwh"], variant["active_energy_export_kwh"]) == (
        0x401E,
        0x4028,
    )


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_sourced_valid_and_planned_within_its_rules(name: str) -> None:
    profile = load_shipped_profile(name)
    assert profile.model and profile.maker
    assert "confidence" in profile.source.lower(), "the source must state its confidence"
    known = vocabulary()
    assert all(r.quantity in known for r in profile.registers)
    assert len({r.quantity for r in profile.registers}) == len(profile.registers)
    used: dict[tuple[int, int], str] = {}
    for register in profile.registers:
        for word in range(register.address, register.address + register.words):
            assert (register.function, word) not in used, f"{register.quantity} overlaps"
            used[(register.function, word)] = register.quantity
    requests = plan_profile(profile)
    planned = [r for request in requests for r in request.registers]
    assert sorted(planned, key=id) == sorted(profile.registers, key=id)
    for request in requests:
        assert request.count <= profile.reads.max_registers
        assert not any(
            request.address < b < request.address + request.count for b in profile.reads.barriers
        )


@pytest.mark.parametrize("name", PROFILES)
def test_golden_frame_decodes_to_the_documented_values(name: str) -> None:
    golden: dict[str, Any] = GOLDEN[name]
    frame = bytes.fromhex(golden["frame"])
    assert frame[0] == golden["unit"] and frame[1] == golden["function"]
    assert frame[2] == len(frame) - 5, "byte count"
    assert int.from_bytes(frame[-2:], "little") == crc16_modbus(frame[:-2]), "CRC"
    data = frame[3:-2]
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]

    profile = load_shipped_profile(name)
    request = next(
        r
        for r in plan_profile(profile)
        if (r.function, r.address, r.count) == (golden["function"], golden["address"], len(words))
    )
    decoded = {}
    for register in request.registers:
        start = register.address - request.address
        decoded[register.quantity] = decode(register, words[start : start + register.words])
    expected = {q: float(v) for q, v in golden["values"].items()}
    expected.update({q: None for q in golden.get("invalid", [])})
    assert decoded == expected


def test_every_shipped_profile_has_exactly_one_golden_frame() -> None:
    assert set(GOLDEN) == set(PROFILES)


# -- invalid markers ---------------------------------------------------------------------------


def test_invalid_markers_become_the_invalid_flag_in_the_snapshot() -> None:
    profile = load_shipped_profile("carlo_gavazzi_em340")
    request = plan_profile(profile)[0]  # voltages, currents, phase powers from 0x0000
    words = [0] * request.count
    words[0:2] = [0x08FD, 0x0000]  # 230.1 V, low word first
    words[2:4] = [0xFFFF, 0x7FFF]  # 0x7FFFFFFF low word first: overflow
    snapshot = _snapshot("em340", 0, [(request, words)])
    assert snapshot.values["voltage_l1_v"] == 230.1
    assert "voltage_l2_v" not in snapshot.values
    assert snapshot.flags["voltage_l2_v"] == FLAG_INVALID
    assert snapshot.quality == OUT_OF_RANGE  # flagged records are not plain "ok"


def test_emulator_nan_fault_writes_the_invalid_marker_of_integer_registers() -> None:
    profile = load_shipped_profile("abb_b23")
    meter = EmulatedMeter(1, profile, clock=lambda: FIXED_TIME, fault="nan")
    for request in plan_profile(profile):
        words = meter.registers(request.function, request.address, request.count)
        for register in request.registers:
            start = register.address - request.address
            assert decode(register, words[start : start + register.words]) is None


# -- the emulator serves every profile ---------------------------------------------------------


@pytest.mark.parametrize("name", PROFILES)
def test_emulator_answers_the_plan_with_values_that_decode_back(name: str) -> None:
    profile = load_shipped_profile(name)
    meter = EmulatedMeter(7, profile, clock=lambda: FIXED_TIME)
    truth = meter.load.sample()
    known = vocabulary()
    for request in plan_profile(profile):
        reply = meter.respond(
            bytes([request.function])
            + request.address.to_bytes(2, "big")
            + request.count.to_bytes(2, "big")
        )
        assert reply.pdu is not None and reply.pdu[0] == request.function, reply.pdu
        data = reply.pdu[2:]
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        for register in request.registers:
            start = register.address - request.address
            value = decode(register, words[start : start + register.words])
            assert value is not None, register.quantity
            assert known[register.quantity].plausible(value), (register.quantity, value)
            step = abs(register.scale) if register.type not in ("f32", "f64") else 0.0
            tolerance = max(step, 1e-6 * abs(truth[register.quantity]), 1e-9)
            assert math.isclose(value, truth[register.quantity], abs_tol=tolerance), (
                register.quantity,
                value,
                truth[register.quantity],
            )


def test_emulator_refuses_reads_the_profile_forbids() -> None:
    em24 = EmulatedMeter(1, load_shipped_profile("carlo_gavazzi_em24"), clock=lambda: FIXED_TIME)
    with pytest.raises(MeterException) as too_long:
        em24.registers(4, 0x0000, 12)  # the EM24 answers at most 11 registers
    assert too_long.value.code == ILLEGAL_DATA_VALUE
    fenced = profile_from_mapping(
        "fenced",
        {
            "defaults": {"function": 3, "type": "u16"},
            "reads": {"barriers": [0x0010]},
            "quantities": {
                "voltage_l1_v": {"address": 0x000F},
                "voltage_l2_v": {"address": 0x0010},
            },
        },
        "test",
    )
    meter = EmulatedMeter(1, fenced, clock=lambda: FIXED_TIME)
    with pytest.raises(MeterException) as spanning:
        meter.registers(3, 0x000F, 2)
    assert spanning.value.code == ILLEGAL_DATA_ADDRESS
    assert [(r.address, r.count) for r in plan_profile(fenced)] == [(0x000F, 1), (0x0010, 1)]


def test_identification_register_is_served_and_recognised() -> None:
    profile = load_shipped_profile("schneider_iem3x55")
    identify = profile.identify
    assert identify is not None
    assert (identify.function, identify.address, identify.words) == (3, 0x0031, 20)
    meter = EmulatedMeter(1, profile, clock=lambda: FIXED_TIME)
    words = meter.registers(identify.function, identify.address, identify.words)
    assert words[:4] == [0x6945, 0x4D33, 0x3135, 0x3500]  # "iEM3155" then NULs
    assert identify.value(words) == "iEM3155"
    assert identify.matches(words)
    assert not identify.matches([0x6945, 0x4D33, 0x3135, 0x3000] + [0] * 16)  # "iEM3150"


def test_numeric_identification_compares_the_raw_value() -> None:
    profile = profile_from_mapping(
        "coded",
        {
            "quantities": {"voltage_l1_v": {"function": 4, "address": 0, "type": "f32"}},
            "identify": {"function": 3, "address": 0xFC02, "type": "u16", "values": [0x0070]},
        },
        "test",
    )
    assert profile.identify is not None
    assert profile.identify.matches([0x0070]) and not profile.identify.matches([0x0071])
    meter = EmulatedMeter(1, profile, clock=lambda: FIXED_TIME)
    assert meter.registers(3, 0xFC02, 1) == [0x0070]


# -- format errors name the key ----------------------------------------------------------------

F32 = {"function": 3, "address": 0, "type": "f32"}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (
            {"quantities": {"voltage_l1_v": {**F32, "invalid": 0xFFFF}}},
            "quantities.voltage_l1_v.invalid",
        ),
        (
            {"quantities": {"voltage_l1_v": {**F32, "type": "u16", "invalid": [0x10000]}}},
            "quantities.voltage_l1_v.invalid[0]",
        ),
        ({"quantities": {"voltage_l1_v": F32}, "reads": {"max_gap": 3}}, "reads.max_gap"),
        (
            {"quantities": {"voltage_l1_v": F32}, "reads": {"max_registers": 126}},
            "reads.max_registers",
        ),
        ({"quantities": {"voltage_l1_v": F32}, "reads": {"max_hole": -1}}, "reads.max_hole"),
        ({"quantities": {"voltage_l1_v": F32}, "reads": {"barriers": [0]}}, "reads.barriers[0]"),
        (
            {"quantities": {"voltage_l1_v": F32}, "reads": {"barriers": [1]}},
            "quantities.voltage_l1_v",
        ),
        (
            {"quantities": {"voltage_l1_v": F32, "voltage_l2_v": {**F32, "address": 1}}},
            "quantities.voltage_l2_v.address",
        ),
        (
            {"quantities": {"voltage_l1_v": {**F32, "type": "f64"}}, "reads": {"max_registers": 2}},
            "quantities.voltage_l1_v",
        ),
        (
            {
                "quantities": {"voltage_l1_v": F32},
                "identify": {**F32, "type": "text", "values": ["x"]},
            },
            "identify.type",
        ),
        (
            {
                "quantities": {"voltage_l1_v": F32},
                "identify": {**F32, "type": "ascii", "values": ["x"]},
            },
            "identify.words",
        ),
        (
            {"quantities": {"voltage_l1_v": F32}, "identify": {**F32, "values": []}},
            "identify.values",
        ),
        (
            {
                "quantities": {"voltage_l1_v": F32},
                "identify": {**F32, "type": "u16", "values": ["a"]},
            },
            "identify.values[0]",
        ),
        ({"quantities": {"voltage_l1_v": F32}, "identify": {**F32, "model": 1}}, "identify.model"),
        # tables where a word is expected (found by hil_tests/test_fuzz_inputs.py: TypeError)
        ({"quantities": {"voltage_l1_v": {**F32, "type": {}}}}, "quantities.voltage_l1_v.type"),
        (
            {"quantities": {"voltage_l1_v": {**F32, "function": []}}},
            "quantities.voltage_l1_v.function",
        ),
        (
            {"quantities": {"voltage_l1_v": {**F32, "word_order": {}}}},
            "quantities.voltage_l1_v.word_order",
        ),
    ],
)
def test_format_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ProfileError) as error:
        profile_from_mapping("p", data, "here.toml")
    assert error.value.key == key
    assert str(error.value).startswith(f"here.toml: {key}: ")


def test_defaults_carry_invalid_markers_and_reads_default_to_the_modbus_limits() -> None:
    profile = profile_from_mapping(
        "p",
        {
            "defaults": {"function": 4, "type": "s32", "invalid": [0x7FFFFFFF]},
            "quantities": {"voltage_l1_v": {"address": 0}, "current_l1_a": {"address": 2}},
        },
        "test",
    )
    assert all(r.invalid == (0x7FFFFFFF,) for r in profile.registers)
    assert (profile.reads.max_hole, profile.reads.max_registers, profile.reads.barriers) == (
        7,
        125,
        (),
    )
    assert profile.identify is None
