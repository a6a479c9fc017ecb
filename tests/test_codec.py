"""The register codec: golden frames from real meter maps, and encode -> decode round trips."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import decode
from drivers.emulation.encode import encode
from drivers.profile import REGISTER_WORDS, Register, load_shipped_profile

# Hand-written RTU response frames, CRC included (CRC-16/MODBUS, low byte first on the wire).
# SDM630, unit 1, FC04 from 0x0000, 6 registers: L1/L2/L3 voltage as big-endian float32
# 0x4366199A = 230.1, 0x43668000 = 230.5, 0x43673333 = 231.2.
SDM630_VOLTAGES = "01 04 0C 4366 199A 4366 8000 4367 3333 DE44"
# DTSU666, unit 2, FC03 from 0x2006, 6 registers: voltages in float32 tenths of a volt
# 0x450FD000 = 2301.0, 0x45101000 = 2305.0, 0x45108000 = 2312.0 (scale 0.1).
DTSU666_VOLTAGES = "02 03 0C 450F D000 4510 1000 4510 8000 4BA8"
# DTSU666, unit 2, FC03 from 0x2044, 2 registers: frequency in hundredths, 0x459C5000 = 5002.0.
DTSU666_FREQUENCY = "02 03 04 459C 5000 2011"


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame_words(text: str, unit: int, function: int) -> list[int]:
    """Check a literal RTU response frame and return its register words."""
    frame = bytes.fromhex(text.replace(" ", ""))
    assert frame[0] == unit and frame[1] == function
    assert frame[2] == len(frame) - 5, "byte count"
    assert int.from_bytes(frame[-2:], "little") == crc16_modbus(frame[:-2]), "CRC"
    data = frame[3:-2]
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def by_quantity(profile_name: str) -> dict[str, Register]:
    return {r.quantity: r for r in load_shipped_profile(profile_name).registers}


def decode_block(registers: list[Register], start: int, words: list[int]) -> dict[str, float]:
    out = {}
    for register in registers:
        offset = register.address - start
        value = decode(register, words[offset : offset + register.words])
        assert value is not None
        out[register.quantity] = value
    return out


def test_crc_matches_the_specification_example() -> None:
    # Modbus over Serial Line V1.02: reading 10 holding registers of unit 1 is 01030000000A C5CD.
    assert crc16_modbus(bytes.fromhex("01030000000A")).to_bytes(2, "little") == b"\xc5\xcd"


def test_sdm630_golden_frame() -> None:
    registers = by_quantity("eastron_sdm630")
    words = frame_words(SDM630_VOLTAGES, unit=1, function=4)
    block = [registers[q] for q in ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")]
    assert decode_block(block, 0x0000, words) == {
        "voltage_l1_v": 230.1,
        "voltage_l2_v": 230.5,
        "voltage_l3_v": 231.2,
    }


def test_dtsu666_golden_frames_apply_the_scaler() -> None:
    registers = by_quantity("chint_dtsu666")
    words = frame_words(DTSU666_VOLTAGES, unit=2, function=3)
    block = [registers[q] for q in ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")]
    assert decode_block(block, 0x2006, words) == {
        "voltage_l1_v": 230.1,
        "voltage_l2_v": 230.5,
        "voltage_l3_v": 231.2,
    }
    frequency = frame_words(DTSU666_FREQUENCY, unit=2, function=3)
    assert decode(registers["frequency_hz"], frequency) == 50.02


@pytest.mark.parametrize(
    ("word_order", "byte_order", "words"),
    [
        ("big", "big", [0x4366, 0x199A]),
        ("little", "big", [0x199A, 0x4366]),
        ("big", "little", [0x6643, 0x9A19]),
        ("little", "little", [0x9A19, 0x6643]),
    ],
)
def test_word_and_byte_orders(word_order: str, byte_order: str, words: list[int]) -> None:
    register = Register("voltage_l1_v", 4, 0, "f32", word_order, byte_order)
    assert decode(register, words) == 230.1
    assert encode(230.1, "f32", word_order=word_order, byte_order=byte_order) == words


@pytest.mark.parametrize(
    ("rtype", "words", "scale", "offset", "value"),
    [
        ("u16", [0xFFFF], 1.0, 0.0, 65535.0),
        ("s16", [0xFB2E], 0.1, 0.0, -123.4),
        ("u32", [0x0001, 0xE240], 0.01, 0.0, 1234.56),
        ("s32", [0xFFFF, 0xFFFE], 1.0, 0.0, -2.0),
        ("u64", [0x0000, 0x0000, 0x0001, 0x0000], 0.001, 0.0, 65.536),
        ("s64", [0xFFFF, 0xFFFF, 0xFFFF, 0xFF9C], 1.0, 0.0, -100.0),
        ("u16", [2731], 0.1, -273.1, 0.0),
        ("f64", [0x406C, 0xC333, 0x3333, 0x3333], 1.0, 0.0, 230.1),
    ],
)
def test_integer_and_double_golden_words(
    rtype: str, words: list[int], scale: float, offset: float, value: float
) -> None:
    register = Register("active_power_w", 3, 0, rtype, scale=scale, offset=offset)
    assert decode(register, words) == value
    assert encode(value, rtype, scale=scale, offset=offset) == words


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("rtype", ["f32", "f64"])
def test_non_finite_floats_decode_to_none(rtype: str, special: float) -> None:
    register = Register("voltage_l1_v", 4, 0, rtype)
    assert decode(register, encode(special, rtype)) is None


def test_encode_refuses_what_the_type_cannot_hold() -> None:
    with pytest.raises(ValueError):
        encode(70000, "u16")
    with pytest.raises(ValueError):
        encode(-1, "u32")
    with pytest.raises(ValueError):
        encode(1e39, "f32")
    with pytest.raises(ValueError):
        encode(math.nan, "s16")


_INTEGER_RANGES = {
    "u16": (0, 2**16 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "s64": (-(2**63), 2**63 - 1),
}
ORDERS = st.sampled_from(["big", "little"])
SCALES = st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0, 2.5, -1.0])
OFFSETS = st.sampled_from([0.0, -273.15, 1000.0, 0.5])


@st.composite
def integer_registers(draw: st.DrawFn) -> tuple[Register, int]:
    rtype = draw(st.sampled_from(sorted(_INTEGER_RANGES)))
    scale, offset = draw(SCALES), draw(OFFSETS)
    low, high = _INTEGER_RANGES[rtype]
    if (scale, offset) != (1.0, 0.0):
        # Beyond 2**53 a float value cannot name every raw step; meters do not scale such counters.
        low, high = max(low, -(2**53)), min(high, 2**53)
    register = Register(
        "active_power_w", 3, 0, rtype, draw(ORDERS), draw(ORDERS), scale=scale, offset=offset
    )
    return register, draw(st.integers(low, high))


@given(integer_registers())
def test_integer_round_trip(case: tuple[Register, int]) -> None:
    register, raw = case
    exact = Decimal(raw) * Decimal(repr(register.scale)) + Decimal(repr(register.offset))
    value: float = float(exact) if (register.scale, register.offset) != (1.0, 0.0) else raw
    words = encode(
        value,
        register.type,
        word_order=register.word_order,
        byte_order=register.byte_order,
        scale=register.scale,
        offset=register.offset,
    )
    assert len(words) == REGISTER_WORDS[register.type]
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(register, words) == float(exact)


@given(
    st.sampled_from(["f32", "f64"]),
    ORDERS,
    ORDERS,
    SCALES,
    OFFSETS,
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, width=32),
)
def test_float_round_trip(
    rtype: str, word_order: str, byte_order: str, scale: float, offset: float, raw: float
) -> None:
    register = Register("active_power_w", 4, 0, rtype, word_order, byte_order, scale, offset)
    value = raw * scale + offset
    words = encode(
        value, rtype, word_order=word_order, byte_order=byte_order, scale=scale, offset=offset
    )
    decoded = decode(register, words)
    assert decoded is not None
    # One rounding to the register's precision (2**-24 or 2**-53 of the raw number), scaled.
    epsilon = 2.0**-23 if rtype == "f32" else 2.0**-51
    tolerance = abs(raw * scale) * epsilon + abs(offset) * 1e-15 + 1e-30
    assert abs(decoded - value) <= tolerance


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), ORDERS, ORDERS)
def test_float32_decodes_to_the_same_float32(
    value: float, word_order: str, byte_order: str
) -> None:
    # The codec prints a float32 as its shortest decimal (230.1, not 230.10000610351562), which
    # must still be the very same float32.
    register = Register("active_power_w", 4, 0, "f32", word_order, byte_order)
    decoded = decode(register, encode(value, "f32", word_order=word_order, byte_order=byte_order))
    assert decoded is not None
    assert struct.pack(">f", decoded) == struct.pack(">f", value)


@pytest.mark.parametrize(
    ("rtype", "word_order", "marker", "words"),
    [
        ("u16", "big", 0xFFFF, [0xFFFF]),
        ("s16", "big", 0x8000, [0x8000]),
        ("s32", "little", 0x7FFFFFFF, [0xFFFF, 0x7FFF]),
        ("u64", "big", 0xFFFFFFFFFFFFFFFF, [0xFFFF] * 4),
        ("s64", "big", 0x8000000000000000, [0x8000, 0, 0, 0]),
        ("f32", "big", 0xFFFFFFFF, [0xFFFF, 0xFFFF]),
    ],
)
def test_invalid_markers_decode_to_none(
    rtype: str, word_order: str, marker: int, words: list[int]
) -> None:
    register = Register("q", 3, 0, rtype, word_order=word_order, invalid=(marker,))
    assert decode(register, words) is None
    unmarked = Register("q", 3, 0, rtype, word_order=word_order)
    assert unmarked == Register("q", 3, 0, rtype, word_order=word_order, invalid=())
    if rtype != "f32":  # 0xFFFFFFFF is a NaN anyway
        assert decode(unmarked, words) is not None


def test_a_value_next_to_the_marker_still_decodes() -> None:
    register = Register("q", 3, 0, "u16", scale=0.1, invalid=(0xFFFF,))
    assert decode(register, [0xFFFE]) == 6553.4
