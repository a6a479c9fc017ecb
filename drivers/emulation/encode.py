"""Turn an engineering value into Modbus register words: the inverse of a meter's register map.

Written independently of drivers.codec (no import from it) so that tests which encode with this
module and decode with the codec check one implementation against another.
"""

from __future__ import annotations

import math
import struct
from decimal import ROUND_HALF_EVEN, Decimal

# type -> (struct format, number of 16-bit words, smallest raw value, largest raw value)
_INTEGERS = {
    "u16": (">H", 1, 0, 2**16 - 1),
    "s16": (">h", 1, -(2**15), 2**15 - 1),
    "u32": (">I", 2, 0, 2**32 - 1),
    "s32": (">i", 2, -(2**31), 2**31 - 1),
    "u64": (">Q", 4, 0, 2**64 - 1),
    "s64": (">q", 4, -(2**63), 2**63 - 1),
}
_FLOATS = {"f32": (">f", 2), "f64": (">d", 4)}
TYPES = tuple(_INTEGERS) + tuple(_FLOATS)


def raw_value(value: float, scale: float = 1.0, offset: float = 0.0) -> Decimal | float:
    """The number a register must hold so that `raw * scale + offset == value`."""
    if not math.isfinite(value):
        return value
    if scale == 1.0 and offset == 0.0:
        return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))
    return (Decimal(repr(float(value))) - Decimal(repr(float(offset)))) / Decimal(
        repr(float(scale))
    )


def raw_limits(rtype: str) -> tuple[float, float]:
    """The smallest and largest raw number a register type can hold (ints for integer types)."""
    if rtype in _INTEGERS:
        return _INTEGERS[rtype][2], _INTEGERS[rtype][3]
    largest = 3.4028234663852886e38 if rtype == "f32" else 1.7976931348623157e308
    if rtype not in _FLOATS:
        raise ValueError(f"unknown register type {rtype!r}")
    return -largest, largest


def _pack(rtype: str, raw: Decimal | float) -> bytes:
    if rtype in _INTEGERS:
        fmt, _, low, high = _INTEGERS[rtype]
        if not isinstance(raw, Decimal):
            raise ValueError(f"{rtype} cannot hold {raw}")
        whole = int(raw.to_integral_value(rounding=ROUND_HALF_EVEN))
        if not low <= whole <= high:
            raise ValueError(f"{rtype} cannot hold {whole} (range {low}..{high})")
        return struct.pack(fmt, whole)
    if rtype not in _FLOATS:
        raise ValueError(f"unknown register type {rtype!r}")
    try:
        return struct.pack(_FLOATS[rtype][0], float(raw))
    except OverflowError:
        raise ValueError(f"{rtype} cannot hold {raw}") from None


def encode(
    value: float,
    rtype: str,
    *,
    word_order: str = "big",
    byte_order: str = "big",
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[int]:
    """Register words (first register first) that a meter would hold for `value`.

    Integer types round to the nearest raw step; a value the type cannot hold raises ValueError.
    Floats may be NaN or infinite (how meters mark a value invalid).
    """
    if word_order not in ("big", "little") or byte_order not in ("big", "little"):
        raise ValueError("word_order and byte_order must be 'big' or 'little'")
    if scale == 0:
        raise ValueError("scale must not be 0")
    packed = _pack(rtype, raw_value(value, scale, offset))
    words = [packed[i : i + 2] for i in range(0, len(packed), 2)]  # most significant first
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def register_count(rtype: str) -> int:
    if rtype in _INTEGERS:
        return _INTEGERS[rtype][1]
    if rtype in _FLOATS:
        return _FLOATS[rtype][1]
    raise ValueError(f"unknown register type {rtype!r}")
