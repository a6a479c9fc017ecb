"""Fuzzing the response decoders: DL/T 645 frames through the stream scanner, Modbus RTU responses
through pymodbus's framer as the driver uses it, register words through the codec of every
shipped profile. No exception escapes; every rejected frame has a reason; a frame that survives
is one that was sent intact. Seeded, so a failure repeats; 10^6 frames each in the long run."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from drivers.codec import decode
from drivers.dlt645.frame import REPLY_BIT, Frame, FrameError, FrameScanner, check_reply
from drivers.profile import load_shipped_profile, shipped_profiles
from hil_tests.conftest import size

ADDRESS = "123456789012"


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One of: a flipped byte, a dropped byte, an inserted byte, a cut, or pure noise."""
    kind = rng.randrange(5)
    data = bytearray(frame)
    at = rng.randrange(len(data))
    if kind == 0:
        data[at] ^= rng.randrange(1, 256)
    elif kind == 1:
        del data[at]
    elif kind == 2:
        data.insert(at, rng.randrange(256))
    elif kind == 3:
        del data[at:]
    else:
        data = bytearray(rng.randbytes(rng.randrange(1, 40)))
    return bytes(data)


def test_dlt645_scanner_survives_mangled_streams(record: Callable[..., None]) -> None:
    rng = random.Random(645)
    frames = size(20_000, 1_000_000)
    scanner = FrameScanner()
    request = Frame(ADDRESS, 0x11, b"")
    sent: set[bytes] = set()
    sent_intact = found = accidental = refused_by_client = 0
    started = time.perf_counter()
    for _ in range(frames):
        data = bytes(rng.randbytes(rng.randrange(4, 9)))  # enough to tell frames apart
        frame = Frame(ADDRESS, REPLY_BIT | 0x11, data)
        intact = rng.random() < 0.2
        wire = frame.encode(preamble=rng.randrange(3))
        sent.add(data)  # a mutation may leave the frame whole (a preamble byte, say): no harm
        if not intact:
            wire = mutate(rng, wire)
        sent_intact += intact
        cut = rng.randrange(len(wire) + 1)  # arrives in two reads, split anywhere
        for part in (wire[:cut], wire[cut:]):
            for got in scanner.feed(part):
                found += 1
                try:
                    check_reply(got, request)  # what the client does with every frame
                except FrameError as exc:
                    assert exc.reason
                    refused_by_client += 1
                    continue
                # An 8-bit checksum lets about 1 in 256 mangled candidates through; the client's
                # address, function and (for reads) identifier-echo checks stop most of those.
                accidental += got.data not in sent
    elapsed = time.perf_counter() - started
    assert all(reason.strip() for reason in scanner.rejections), "a rejection without a reason"
    assert found >= 0.95 * sent_intact  # a mangled neighbour swallows the odd intact frame
    assert accidental <= frames // 500, f"{accidental} mangled frames passed as replies"
    record(
        "fuzz_dlt645",
        frames=frames,
        sent_intact=sent_intact,
        found=found,
        refused_by_client=refused_by_client,
        passed_mangled=accidental,
        rejections=len(scanner.rejections),
        reasons=len({" ".join(r.split()[:3]) for r in scanner.rejections}),
        frames_per_s=round(frames / elapsed),
    )


def rtu_response(unit: int, words: list[int]) -> bytes:
    pdu = bytes([unit, 3, 2 * len(words)]) + b"".join(struct.pack(">H", w) for w in words)
    return pdu + struct.pack(">H", FramerRTU.compute_CRC(pdu))  # pymodbus keeps it byte-swapped


def test_modbus_rtu_framer_as_the_driver_uses_it(record: Callable[..., None]) -> None:
    """The driver treats any exception from pymodbus as a garbled answer. What the framer hands
    back as a PDU carries the registers sent, but for the rare corruption CRC-16 cannot see."""
    rng = random.Random(485)
    frames = size(20_000, 1_000_000)
    framer = FramerRTU(DecodePDU(is_server=False))
    decoded = refused = undetected = 0
    started = time.perf_counter()
    for _ in range(frames):
        words = [rng.randrange(65536) for _ in range(rng.randrange(1, 10))]
        wire = rtu_response(1, words)
        mangled = mutate(rng, wire) if rng.random() < 0.8 else wire
        try:
            _, pdu = framer.handleFrame(mangled, 1, 0)
        except (ModbusException, ValueError, IndexError, struct.error):
            refused += 1  # caught by the driver: `invalid_response`
            continue
        if pdu is None:
            refused += 1
            continue
        decoded += 1
        if list(pdu.registers) != words:
            assert mangled != wire
            undetected += 1  # a mangled frame whose CRC still held: CRC-16 lets ~1/65536 by
    elapsed = time.perf_counter() - started
    assert undetected <= max(2, frames // 10_000), f"{undetected} corrupted frames decoded"
    record(
        "fuzz_modbus_rtu",
        frames=frames,
        decoded=decoded,
        refused=refused,
        undetected=undetected,
        frames_per_s=round(frames / elapsed),
    )


def test_every_profile_register_decodes_any_words(record: Callable[..., None]) -> None:
    rng = random.Random(32)
    rounds = size(200, 20_000)
    registers = [r for name in shipped_profiles() for r in load_shipped_profile(name).registers]
    decoded = invalid = 0
    for _ in range(rounds):
        for register in registers:
            words = [rng.randrange(65536) for _ in range(register.words)]
            value = decode(register, words)
            if value is None:
                invalid += 1
            else:
                assert isinstance(value, float) and value == value  # a number, never NaN
                decoded += 1
    record(
        "fuzz_codec",
        registers=len(registers),
        words_decoded=decoded + invalid,
        invalid=invalid,
    )
