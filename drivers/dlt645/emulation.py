"""An emulated DL/T 645-2007 meter: answers reads from a LoadModel, with injectable faults.

It answers read (0x11), read follow-up (0x12) and read address (0x13), from its own address or
the wildcard; broadcasts get no answer. The active power block 0203FF00 is answered in two
frames (0xB1, then 0x92 on the follow-up request) so that clients' reassembly gets exercised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.dlt645.frame import (
    ERROR_BIT,
    FOLLOW_UP_BIT,
    READ,
    READ_ADDRESS,
    READ_FOLLOW_UP,
    REPLY_BIT,
    WILDCARD_ADDRESS,
    Frame,
    decode_di,
    encode_address,
    encode_di,
    normalise_address,
)
from drivers.dlt645.identifiers import identifiers
from drivers.emulation.load import LoadModel

FAULTS = ("silent", "garbage", "bad_checksum", "error_reply", "slow")
NO_REQUESTED_DATA = 0x02
OTHER_ERROR = 0x01

SPLIT_BLOCK = "0203FF00"  # total, A, B, C active power: answered in two frames
SPLIT_BLOCK_PARTS = ("02030000", "02030100", "02030200", "02030300")

# What the "garbage" fault sends: bytes that hold no frame (a 68 without a header after it).
GARBAGE = bytes.fromhex("00 55 68 13 37 42 99 16 01 FE")


@dataclass(frozen=True)
class Answer:
    """The bytes to put on the line (None: stay silent), after `delay_s`."""

    wire: bytes | None
    delay_s: float = 0.0


class EmulatedDlt645Meter:
    """One meter at `address` (12 digits). Without `load`, the model is seeded with `seed` plus
    the address, so meters sharing a seed still differ. `fault` (one of FAULTS or None) may be
    changed at any time from another thread; "slow" answers after `slow_delay_s`. Replies start
    with `preamble` FE bytes, as many meters send."""

    def __init__(
        self,
        address: str,
        load: LoadModel | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        fault: str | None = None,
        *,
        slow_delay_s: float = 2.0,
        preamble: int = 4,
    ) -> None:
        self.address = normalise_address(address)
        if self.address == WILDCARD_ADDRESS or "A" in self.address:
            raise ValueError(f"a meter's own address must be 12 decimal digits, not {address}")
        self.load = (
            load if load is not None else LoadModel(seed=seed + int(self.address), clock=clock)
        )
        self.fault = fault
        self.slow_delay_s = slow_delay_s
        self.preamble = preamble
        self.requests = 0  # requests addressed to this meter, answered or not
        self._lock = threading.Lock()
        self._follow_ups: dict[str, list[bytes]] = {}

    @property
    def fault(self) -> str | None:
        return self._fault

    @fault.setter
    def fault(self, fault: str | None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (one of {', '.join(FAULTS)})")
        self._fault = fault

    def addressed_by(self, request: Frame) -> bool:
        return request.address in (self.address, WILDCARD_ADDRESS)

    def respond(self, request: Frame) -> Answer:
        """The answer to one request frame addressed to this meter (or to the wildcard)."""
        with self._lock:
            self.requests += 1
        fault = self.fault
        if fault == "silent" or request.is_reply:
            return Answer(None)
        if fault == "garbage":
            return Answer(GARBAGE)
        reply = self._reply(request, fault)
        if reply is None:
            return Answer(None)
        wire = reply.encode(self.preamble)
        if fault == "bad_checksum":
            wire = wire[:-2] + bytes([wire[-2] ^ 0xFF]) + wire[-1:]
        return Answer(wire, self.slow_delay_s if fault == "slow" else 0.0)

    def values(self) -> dict[str, float]:
        """Every quantity the meter can report now, in vocabulary units."""
        values = self.load.sample()
        # The emulator's combination word adds import and export; a real meter's setting decides.
        values["active_energy_combined_kwh"] = (
            values["active_energy_import_kwh"] + values["active_energy_export_kwh"]
        )
        return values

    # -- replies -----------------------------------------------------------------------------

    def _reply(self, request: Frame, fault: str | None) -> Frame | None:
        if request.function == READ_ADDRESS:
            return self._frame(READ_ADDRESS, encode_address(self.address))
        if request.function not in (READ, READ_FOLLOW_UP) or len(request.data) < 4:
            return self._error(request.function, OTHER_ERROR)
        di = decode_di(request.data[:4])
        if fault == "error_reply":
            return self._error(request.function, NO_REQUESTED_DATA)
        if request.function == READ_FOLLOW_UP:
            return self._follow_up(di, request.data[4:])
        data = self._read(di)
        if data is None:
            return self._error(READ, NO_REQUESTED_DATA)
        if di == SPLIT_BLOCK:
            half = len(data) // 2
            with self._lock:
                self._follow_ups[di] = [data[half:]]
            return self._frame(READ | FOLLOW_UP_BIT, encode_di(di) + data[:half])
        return self._frame(READ, encode_di(di) + data)

    def _read(self, di: str) -> bytes | None:
        known = identifiers()
        parts = SPLIT_BLOCK_PARTS if di == SPLIT_BLOCK else (di,)
        if any(part not in known for part in parts):
            return None
        values = self.values()
        return b"".join(known[p].encode(values.get(known[p].quantity, 0.0)) for p in parts)

    def _follow_up(self, di: str, rest: bytes) -> Frame:
        with self._lock:
            pending = self._follow_ups.get(di, [])
            sequence = rest[0] if rest else 0
            if not 1 <= sequence <= len(pending):
                return self._error(READ_FOLLOW_UP, NO_REQUESTED_DATA)
            if sequence == len(pending):
                del self._follow_ups[di]
        more = FOLLOW_UP_BIT if sequence < len(pending) else 0
        return self._frame(
            READ_FOLLOW_UP | more, encode_di(di) + pending[sequence - 1] + bytes([sequence])
        )

    def _frame(self, function: int, data: bytes) -> Frame:
        return Frame(self.address, REPLY_BIT | function, data)

    def _error(self, function: int, error_byte: int) -> Frame:
        return Frame(self.address, REPLY_BIT | ERROR_BIT | function, bytes([error_byte]))
