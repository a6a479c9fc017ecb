"""Decode Modbus register words into values of the quantity vocabulary."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from decimal import Decimal

from drivers.profile import Register

_FORMATS = {
    "u16": "H",
    "s16": "h",
    "u32": "I",
    "s32": "i",
    "u64": "Q",
    "s64": "q",
    "f32": "f",
    "f64": "d",
}


def register_bytes(register: Register, words: Sequence[int]) -> bytes:
    """Arrange the raw words into big-endian byte order for struct."""
    ordered = list(words) if register.word_order == "big" else list(reversed(words))
    if register.byte_order == "little":
        return b"".join(((w & 0xFF) << 8 | w >> 8).to_bytes(2, "big") for w in ordered)
    return b"".join(w.to_bytes(2, "big") for w in ordered)


def _shortest_f32(value: float) -> float:
    """The shortest decimal that reads back as the same float32: 230.1, not 230.10000610351562."""
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.unpack(">f", struct.pack(">f", candidate))[0] == value:
            return candidate
    return value


def decode(register: Register, words: Sequence[int]) -> float | None:
    """The engineering value of `words`, or None when the meter marks it invalid: NaN, infinity,
    or one of the register's `invalid` raw values."""
    arranged = register_bytes(register, words)
    if register.invalid and int.from_bytes(arranged, "big") in register.invalid:
        return None
    raw: float = struct.unpack(">" + _FORMATS[register.type], arranged)[0]
    if register.type in ("f32", "f64"):
        if not math.isfinite(raw):
            return None
        if register.type == "f32":
            raw = _shortest_f32(raw)
    if register.scale == 1.0 and register.offset == 0.0:
        return float(raw)
    exact = Decimal(repr(raw)) * Decimal(repr(register.scale)) + Decimal(repr(register.offset))
    return float(exact)
