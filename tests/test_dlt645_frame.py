"""DL/T 645-2007 framing, BCD numbers and the identifier table, on bytes alone."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dlt645 import frame as frame_module
from drivers.dlt645.bcd import decode_bcd, encode_bcd, largest_bcd
from drivers.dlt645.frame import (
    READ,
    WILDCARD_ADDRESS,
    Found,
    Frame,
    FrameError,
    FrameScanner,
    Incomplete,
    check_reply,
    decode_address,
    decode_di,
    describe_error,
    encode_address,
    encode_di,
    follow_up_request,
    parse_at,
    read_address_request,
    read_request,
)
from drivers.dlt645.identifiers import DEFAULT_IDENTIFIERS, Dlt645Device, identifiers
from drivers.vocabulary import vocabulary

# FACTS.md §8: forward active total energy (00010000) from meter 123456789012.
GOLDEN = bytes.fromhex("FE FE FE FE 68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16")

addresses = st.text(alphabet="0123456789", min_size=12, max_size=12)
dis = st.binary(min_size=4, max_size=4).map(lambda b: b.hex().upper())


def reply(address: str, di: str, data: bytes, control: int = 0x91) -> Frame:
    return Frame(address, control, encode_di(di) + data)


# -- the worked example ----------------------------------------------------------------------


def test_worked_example_frame_is_built_exactly() -> None:
    assert read_request("123456789012", "00010000").encode(preamble=4) == GOLDEN


def test_worked_example_frame_parses_back() -> None:
    outcome = parse_at(GOLDEN, 4)
    assert isinstance(outcome, Found)
    assert outcome.end == len(GOLDEN)
    assert outcome.frame == Frame("123456789012", READ, bytes([0x00, 0x00, 0x01, 0x00]))
    assert decode_di(outcome.frame.data) == "00010000"


def test_fields_travel_low_byte_first() -> None:
    assert encode_address("123456789012") == bytes.fromhex("12 90 78 56 34 12")
    assert encode_di("02010100") == bytes.fromhex("00 01 01 02")
    assert encode_address(WILDCARD_ADDRESS) == b"\xaa" * 6
    assert read_address_request().encode() == bytes.fromhex("68 AA AA AA AA AA AA 68 13 00 DF 16")


def test_follow_up_request_carries_identifier_and_sequence() -> None:
    frame = follow_up_request("123456789012", "0203FF00", 1)
    assert frame.control == 0x12
    assert frame.data == bytes.fromhex("00 FF 03 02 01")
    assert frame.encode()[8:15] == bytes.fromhex("12 05 33 32 36 35 34")


@pytest.mark.parametrize("bad", ["12345678901", "1234567890123", "12345678901B", "abc"])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="12 decimal digits"):
        encode_address(bad)


# -- round trips -----------------------------------------------------------------------------


@given(
    address=addresses,
    control=st.integers(0, 255),
    data=st.binary(max_size=255),
    preamble=st.integers(0, 4),
)
def test_frames_round_trip(address: str, control: int, data: bytes, preamble: int) -> None:
    frame = Frame(address, control, data)
    wire = frame.encode(preamble)
    outcome = parse_at(wire, preamble)
    assert isinstance(outcome, Found)
    assert outcome.frame == frame
    assert outcome.end == len(wire)
    assert FrameScanner().feed(wire) == [frame]


@given(address=addresses, di=dis)
def test_fields_round_trip(address: str, di: str) -> None:
    assert decode_address(encode_address(address)) == address
    assert decode_di(encode_di(di)) == di


@given(
    length=st.integers(1, 6),
    decimals=st.integers(0, 4),
    signed=st.booleans(),
    data=st.data(),
)
def test_bcd_round_trips_with_sign_and_decimals(
    length: int, decimals: int, signed: bool, data: st.DataObject
) -> None:
    magnitude = data.draw(st.integers(0, largest_bcd(length, signed)))
    negative = signed and data.draw(st.booleans()) and magnitude > 0
    value = (-magnitude if negative else magnitude) / 10**decimals
    raw = encode_bcd(value, length, decimals, signed)
    assert len(raw) == length
    assert decode_bcd(raw, decimals, signed) == pytest.approx(value, abs=10**-decimals / 2)
    if signed:
        assert bool(raw[-1] & 0x80) == negative


def test_bcd_decodes_known_values() -> None:
    assert decode_bcd(bytes.fromhex("56 34 12"), 4, signed=True) == pytest.approx(12.3456)
    assert decode_bcd(bytes.fromhex("56 34 92"), 4, signed=True) == pytest.approx(-12.3456)
    assert decode_bcd(bytes.fromhex("56 34 92"), 4, signed=False) == pytest.approx(92.3456)
    assert decode_bcd(bytes.fromhex("00 23"), 1, signed=False) == pytest.approx(230.0)
    assert decode_bcd(bytes.fromhex("FF FF"), 1, signed=False) is None


def test_bcd_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_bcd(100.0, 2, 2, signed=False)
    with pytest.raises(ValueError, match="negative"):
        encode_bcd(-1.0, 2, 1, signed=False)


# -- finding frames and rejecting corruption -------------------------------------------------


def test_scanner_finds_a_frame_after_preambles_and_garbage() -> None:
    frame = reply("123456789012", "02010100", bytes.fromhex("12 23"))
    scanner = FrameScanner()
    noise = bytes.fromhex("00 68 13 37 FE 16 68 FF")
    assert scanner.feed(noise) == []
    assert scanner.feed(frame.encode(preamble=4)[:9]) == []  # half of it so far
    assert scanner.feed(frame.encode(preamble=4)[9:]) == [frame]
    assert scanner.rejections == []


def test_scanner_finds_consecutive_frames_in_one_chunk() -> None:
    first = reply("000000000001", "02010100", b"\x00\x23")
    second = reply("000000000002", "02010100", b"\x10\x23")
    assert FrameScanner().feed(first.encode(2) + second.encode(0)) == [first, second]


def corrupt(wire: bytes, index: int, value: int) -> bytes:
    spoiled = bytearray(wire)
    spoiled[index] = value
    return bytes(spoiled)


GOOD = reply("123456789012", "00010000", bytes.fromhex("12 34 56 00")).encode()


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (
            corrupt(GOOD, len(GOOD) - 2, GOOD[-2] ^ 0x01),
            r"bad checksum [0-9A-F]{2} \(computed [0-9A-F]{2}\)",
        ),
        (corrupt(GOOD, len(GOOD) - 1, 0x17), r"bad end byte 17 \(expected 16\)"),
        (
            corrupt(GOOD, 9, GOOD[9] - 1),
            r"length mismatch: L = 7 but the frame carries 8 data bytes",
        ),
    ],
)
def test_each_corruption_is_rejected_with_its_reason(wire: bytes, reason: str) -> None:
    scanner = FrameScanner()
    assert scanner.feed(wire) == []
    assert len(scanner.rejections) == 1
    assert re.fullmatch(reason, scanner.rejections[0]), scanner.rejections


def test_a_frame_cut_short_is_reported_as_truncated() -> None:
    scanner = FrameScanner()
    assert scanner.feed(GOOD[:-3]) == []
    assert scanner.pending() == f"truncated frame: {len(GOOD) - 3} of {len(GOOD)} bytes (L = 8)"
    assert isinstance(parse_at(GOOD[:5], 0), Incomplete)


def test_a_corrupt_frame_does_not_hide_the_good_one_after_it() -> None:
    bad = corrupt(GOOD, len(GOOD) - 2, GOOD[-2] ^ 0xFF)
    scanner = FrameScanner()
    frames = scanner.feed(bad + GOOD)
    assert [f.address for f in frames] == ["123456789012"]
    assert scanner.rejections[0].startswith("bad checksum")


def test_replies_are_checked_against_the_request() -> None:
    request = read_request("123456789012", "00010000")
    check_reply(reply("123456789012", "00010000", b"\x00" * 4), request)
    with pytest.raises(
        FrameError, match="wrong address: reply from 000000000001, asked 123456789012"
    ):
        check_reply(reply("000000000001", "00010000", b"\x00" * 4), request)
    with pytest.raises(FrameError, match=r"not a reply \(control 11\)"):
        check_reply(request, request)
    with pytest.raises(FrameError, match="reply to function 13, expected 11"):
        check_reply(Frame("123456789012", 0x93, encode_address("123456789012")), request)
    # Anyone may answer the wildcard address.
    check_reply(Frame("123456789012", 0x93, b""), read_address_request())


def test_error_bits_are_named() -> None:
    assert describe_error(0x02) == "no requested data"
    assert describe_error(0x05) == "other error; password wrong or not authorised"
    assert describe_error(0x40) == "too many tariffs"
    assert describe_error(0x00) == "unspecified error (error byte 00)"


# -- the identifier table --------------------------------------------------------------------


def test_identifier_table_covers_what_cgw_reads() -> None:
    table = identifiers()
    expected = {
        "00000000": ("active_energy_combined_kwh", 4, 2, 1.0),
        "00010000": ("active_energy_import_kwh", 4, 2, 1.0),
        "00020000": ("active_energy_export_kwh", 4, 2, 1.0),
        "02010100": ("voltage_l1_v", 2, 1, 1.0),
        "02020100": ("current_l1_a", 3, 3, 1.0),
        "02030000": ("active_power_w", 3, 4, 1000.0),
        "02060000": ("power_factor", 2, 3, 1.0),
        "02800002": ("frequency_hz", 2, 2, 1.0),
    }
    for di, (quantity, length, decimals, factor) in expected.items():
        entry = table[di]
        assert (entry.quantity, entry.length, entry.decimals, entry.factor) == (
            quantity,
            length,
            decimals,
            factor,
        )
    assert table["02020100"].signed and table["02030000"].signed
    assert not table["02010100"].signed and not table["00010000"].signed


def test_default_identifiers_map_to_vocabulary_quantities_in_its_units() -> None:
    known = vocabulary()
    in_vocabulary_units = {"kWh": "kWh", "V": "V", "A": "A", "kW": "W", "Hz": "Hz", "": ""}
    for di in DEFAULT_IDENTIFIERS:
        entry = identifiers()[di]
        assert entry.quantity in known, di
        meter_unit = entry.format.split(",")[0].partition(" ")[2]
        assert in_vocabulary_units[meter_unit] == known[entry.quantity].unit, di


def test_kilowatts_become_watts() -> None:
    power = identifiers()["02030000"]
    assert power.decode(bytes.fromhex("56 34 92")) == pytest.approx(-12345.6)
    assert power.encode(-12345.6) == bytes.fromhex("56 34 92")
    assert power.encode(1e9) == bytes.fromhex("99 99 79")  # saturates like a display


def test_device_refuses_unknown_identifiers_and_addresses() -> None:
    assert Dlt645Device("m", "123456789012").identifiers == DEFAULT_IDENTIFIERS
    with pytest.raises(ValueError, match="no DL/T 645 identifier 04000101"):
        Dlt645Device("m", "123456789012", ("04000101",))
    with pytest.raises(ValueError, match="12 decimal digits"):
        Dlt645Device("m", "12345")


def _closing_length_by_definition(buf: bytes, start: int) -> int | None:
    """The data length (0..255) at which the bytes after the header end in CS 16: the
    definition, summing each candidate from scratch."""
    for length in range(256):
        cs_at = start + 10 + length
        if cs_at + 1 >= len(buf):
            return None
        if (
            buf[cs_at + 1] == 0x16
            and buf[cs_at]
            == (sum(buf[start : start + 9]) + length + sum(buf[start + 10 : cs_at])) & 0xFF
        ):
            return length
    return None


@given(
    st.lists(
        st.sampled_from([0x68, 0x16, 0x00, 0xFF, 0x33, 0x01]) | st.integers(0, 255), max_size=300
    ),
    st.integers(0, 20),
)
def test_the_closing_length_search_matches_its_definition(data: list[int], start: int) -> None:
    # The search keeps a running sum and stops 255 bytes on (coverage-guided fuzzing found it
    # quadratic: 30 kB of 68 bytes in one read took 36 s); it must find what the definition does.
    buf = bytes(data)
    if start + 10 > len(buf):
        return
    assert frame_module._closing_length(buf, start) == _closing_length_by_definition(buf, start)
