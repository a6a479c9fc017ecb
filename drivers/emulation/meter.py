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
from drivers.profile import Profile, Register

FAULTS = ("silent", "exception", "garbage", "slow", "out_of_range", "nan")
MAX_READ = 125  # FC03/FC04 register limit

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
SERVER_DEVICE_FAILURE = 4

# What the "out_of_range" fault makes the meter report: far outside any plausible range.
_ABSURD = {"_v": 9999.0, "_hz": 999.0, "power_factor": 9.0, "_a": 999999.0}


@dataclass(frozen=True)
class Reply:
    """What a meter does with one request.

    `pdu` None means no answer at all. `corrupt` asks the server to spoil the frame on the wire
    (bad CRC on RTU, wrong length on TCP); `delay_s` is how long to wait before answering.
    """

    pdu: bytes | None
    delay_s: float = 0.0
    corrupt: bool = False


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
    answers after `slow_delay_s`.
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
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be 1..247, not {unit}")
        self.unit = unit
        self.profile = profile
        self.load = load if load is not None else LoadModel(seed=seed + unit, clock=clock)
        self.slow_delay_s = slow_delay_s
        self.fault = fault
        self.requests = 0  # requests addressed to this meter, answered or not
        self._lock = threading.Lock()
        self._spans: dict[int, tuple[int, int]] = {}
        for function in {r.function for r in profile.registers}:
            mine = [r for r in profile.registers if r.function == function]
            self._spans[function] = (
                min(r.address for r in mine),
                max(r.address + r.words for r in mine),
            )

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
        if span is None or address < span[0] or end > span[1] or not overlapping:
            raise MeterException(ILLEGAL_DATA_ADDRESS)
        fault = self.fault
        values = self.load.sample()
        words = [0] * count  # holes inside a block read as 0, as most meters do
        for register in overlapping:
            register_words = self._words(register, values.get(register.quantity, 0.0), fault)
            for i, word in enumerate(register_words):
                if address <= register.address + i < end:
                    words[register.address + i - address] = word
        return words

    def _words(self, register: Register, value: float, fault: str | None) -> list[int]:
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
        function = pdu[0]
        if function not in (3, 4):
            return Reply(exception_pdu(function, ILLEGAL_FUNCTION))
        if len(pdu) != 5:
            return Reply(exception_pdu(function, ILLEGAL_DATA_VALUE))
        address, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= MAX_READ:
            return Reply(exception_pdu(function, ILLEGAL_DATA_VALUE))
        if fault == "exception":
            return Reply(exception_pdu(function, SERVER_DEVICE_FAILURE))
        try:
            words = self.registers(function, address, count)
        except MeterException as exc:
            return Reply(exception_pdu(function, exc.code))
        body = bytes([function, 2 * count]) + b"".join(w.to_bytes(2, "big") for w in words)
        if fault == "garbage":
            return Reply(body, corrupt=True)
        if fault == "slow":
            return Reply(body, delay_s=self.slow_delay_s)
        return Reply(body)


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
