"""An emulated meter: a profile's register map filled from a load model, with injectable faults."""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.emulation.encode import encode, raw_limits, raw_value
from drivers.emulation.load import LoadModel
from drivers.profile import ASCII, Identify, Profile, Register

FAULTS = (
    "silent",
    "exception",
    "garbage",
    "bad_crc",
    "wrong_unit",
    "slow",
    "out_of_range",
    "nan",
)
MAX_READ = 125  # FC03/FC04 register limit

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
SERVER_DEVICE_FAILURE = 4

# What the "garbage" fault puts on the line instead of an answer: bytes that hold no frame.
GARBAGE = bytes.fromhex("00 55 AA FF 13 37 42 99 E7 01")

# What the "out_of_range" fault makes the meter report: far outside any plausible range.
_ABSURD = {"_v": 9999.0, "_hz": 999.0, "power_factor": 9.0, "_a": 999999.0}


@dataclass(frozen=True)
class Reply:
    """What a meter does with one request.

    `pdu` None means no answer at all. `corrupt` asks the server to spoil the frame on the wire
    (bad CRC on RTU, wrong length on TCP); `delay_s` is how long to wait before answering.
    `unit`, when set, is the unit id the answer carries instead of the request's; `raw` means
    `pdu` is bytes to put on the wire as they are, with no framing at all.
    """

    pdu: bytes | None
    delay_s: float = 0.0
    corrupt: bool = False
    unit: int | None = None
    raw: bool = False


class MeterException(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"Modbus exception {code}")
        self.code = code


def exception_pdu(function: int, code: int) -> bytes:
    return bytes([(function | 0x80) & 0xFF, code])


class EmulatedMeter:
    """Answers FC03/FC04 reads of `profile`'s registers with values from a LoadModel.

    Without `load`, the model is seeded with `seed + unit`, so meters sharing a seed still differ.
    `fault` may be changed at any time (from another thread) to one of FAULTS or None; "slow"
    answers after `slow_delay_s`. Every answer comes `latency_s` after the request (a real
    meter's processing time; 0 by default). "garbage" answers with bytes that hold no frame,
    "bad_crc" with a correct answer whose CRC is wrong, "wrong_unit" with a correct answer from
    another unit id. Like the real meter, it serves the profile's identification
    register (its first expected value) and refuses reads the profile's read rules forbid: longer
    than `reads.max_registers`, or spanning a barrier.
    """

    def __init__(
        self,
        unit: int,
        profile: Profile,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        fault: str | None = None,
        *,
        load: LoadModel | None = None,
        slow_delay_s: float = 2.0,
        latency_s: float = 0.0,
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be 1..247, not {unit}")
        self.unit = unit
        self.profile = profile
        self.load = load if load is not None else LoadModel(seed=seed + unit, clock=clock)
        self.slow_delay_s = slow_delay_s
        self.latency_s = latency_s
        self.fault = fault
        self.requests = 0  # requests addressed to this meter, answered or not
        self._lock = threading.Lock()
        self._identity: dict[tuple[int, int], int] = {}
        if profile.identify is not None:
            ident = profile.identify
            for i, word in enumerate(identify_words(ident, ident.values[0])):
                self._identity[(ident.function, ident.address + i)] = word
        self._spans: dict[int, tuple[int, int]] = {}
        places = [(r.function, r.address, r.address + r.words) for r in profile.registers]
        places += [(function, address, address + 1) for function, address in self._identity]
        for function in {f for f, _, _ in places}:
            mine = [(start, end) for f, start, end in places if f == function]
            self._spans[function] = (min(s for s, _ in mine), max(e for _, e in mine))

    @property
    def fault(self) -> str | None:
        return self._fault

    @fault.setter
    def fault(self, fault: str | None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (one of {', '.join(FAULTS)})")
        self._fault = fault  # a single attribute store: atomic for the server threads

    def registers(self, function: int, address: int, count: int) -> list[int]:
        """The words of a block read; MeterException(2) when the block is outside the map."""
        span = self._spans.get(function)
        end = address + count
        overlapping = [
            r
            for r in self.profile.registers
            if r.function == function and r.address < end and address < r.address + r.words
        ]
        identity = {
            a: w for (f, a), w in self._identity.items() if f == function and address <= a < end
        }
        if (
            span is None
            or address < span[0]
            or end > span[1]
            or not (overlapping or identity)
            or any(address < b < end for b in self.profile.reads.barriers)
        ):
            raise MeterException(ILLEGAL_DATA_ADDRESS)
        if count > self.profile.reads.max_registers:
            raise MeterException(ILLEGAL_DATA_VALUE)
        fault = self.fault
        values = self.load.sample()
        words = [0] * count  # holes inside a block read as 0, as most meters do
        for place, word in identity.items():
            words[place - address] = word
        for register in overlapping:
            register_words = self._words(register, values.get(register.quantity, 0.0), fault)
            for i, word in enumerate(register_words):
                if address <= register.address + i < end:
                    words[register.address + i - address] = word
        return words

    def _words(self, register: Register, value: float, fault: str | None) -> list[int]:
        if fault == "nan" and register.invalid:
            return _marker_words(register, register.invalid[0])
        if fault == "nan" and register.type in ("f32", "f64"):
            value = math.nan
        elif fault == "out_of_range":
            value = next(
                (v for suffix, v in _ABSURD.items() if register.quantity.endswith(suffix)), 1e12
            )
        return _encode_saturating(register, value)

    def respond(self, pdu: bytes) -> Reply:
        """The reply to one request PDU (function code first) addressed to this meter."""
        with self._lock:
            self.requests += 1
        fault = self.fault
        if fault == "silent" or not pdu:
            return Reply(None)
        if fault == "garbage":
            return Reply(GARBAGE, delay_s=self.latency_s, raw=True)
        body = self._answer(pdu, fault)
        delay_s = self.latency_s + (self.slow_delay_s if fault == "slow" else 0.0)
        if fault == "bad_crc":
            return Reply(body, delay_s=delay_s, corrupt=True)
        if fault == "wrong_unit":
            return Reply(body, delay_s=delay_s, unit=self.unit % 247 + 1)
        return Reply(body, delay_s=delay_s)

    def _answer(self, pdu: bytes, fault: str | None) -> bytes:
        """The answer PDU: the registers read, or an exception."""
        function = pdu[0]
        if function not in (3, 4):
            return exception_pdu(function, ILLEGAL_FUNCTION)
        if len(pdu) != 5:
            return exception_pdu(function, ILLEGAL_DATA_VALUE)
        address, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= MAX_READ:
            return exception_pdu(function, ILLEGAL_DATA_VALUE)
        if fault == "exception":
            return exception_pdu(function, SERVER_DEVICE_FAILURE)
        try:
            words = self.registers(function, address, count)
        except MeterException as exc:
            return exception_pdu(function, exc.code)
        return bytes([function, 2 * count]) + b"".join(w.to_bytes(2, "big") for w in words)


def _encode_saturating(register: Register, value: float) -> list[int]:
    """Encode, clamping to what the register type can hold (a meter's display saturates too)."""
    try:
        return encode(
            value,
            register.type,
            word_order=register.word_order,
            byte_order=register.byte_order,
            scale=register.scale,
            offset=register.offset,
        )
    except ValueError:
        low, high = raw_limits(register.type)
        clamped = high if raw_value(value, register.scale, register.offset) > 0 else low
        return encode(
            clamped, register.type, word_order=register.word_order, byte_order=register.byte_order
        )


def _marker_words(register: Register, marker: int) -> list[int]:
    """The words holding the raw bit pattern `marker` in the register's word and byte order."""
    words = [(marker >> (16 * i)) & 0xFFFF for i in reversed(range(register.words))]
    if register.word_order == "little":
        words.reverse()
    if register.byte_order == "little":
        words = [(w & 0xFF) << 8 | w >> 8 for w in words]
    return words


def identify_words(identify: Identify, value: int | str) -> list[int]:
    """The words an identification register holds when the meter is the model `value`."""
    if identify.type == ASCII:
        text = str(value).encode("latin-1").ljust(2 * identify.words, b"\x00")
        words = [int.from_bytes(text[i : i + 2], "big") for i in range(0, len(text), 2)]
        if identify.word_order == "little":
            words.reverse()
        if identify.byte_order == "little":
            words = [(w & 0xFF) << 8 | w >> 8 for w in words]
        return words
    return encode(
        int(value),
        identify.type,
        word_order=identify.word_order,
        byte_order=identify.byte_order,
    )
