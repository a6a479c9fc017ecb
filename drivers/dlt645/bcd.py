"""DL/T 645 numbers: packed BCD, low byte first, optionally signed by the top bit of the highest
byte, with a fixed number of decimals (XXX.X, XX.XXXX, ...) per data identifier."""

from __future__ import annotations


def decode_bcd(raw: bytes, decimals: int, signed: bool) -> float | None:
    """The value of `raw` (plain bytes, low byte first); None when a digit is not 0..9 (meters
    send FF..FF for a value they do not have)."""
    if not raw:
        return None
    digits = bytearray(raw[::-1])
    negative = signed and bool(digits[0] & 0x80)
    if signed:
        digits[0] &= 0x7F
    text = digits.hex()
    if not text.isdigit():
        return None
    value = int(text) / 10**decimals
    return -value if negative else value


def encode_bcd(value: float, length: int, decimals: int, signed: bool) -> bytes:
    """`value` as `length` BCD bytes, low byte first; ValueError when it does not fit."""
    scaled = round(abs(value) * 10**decimals)
    negative = value < 0 and scaled != 0
    if negative and not signed:
        raise ValueError(f"{value} is negative but the format is unsigned")
    if scaled > largest_bcd(length, signed):
        raise ValueError(f"{value} does not fit in {length} BCD bytes with {decimals} decimals")
    big_endian = bytearray(bytes.fromhex(f"{scaled:0{2 * length}d}"))
    if negative:
        big_endian[0] |= 0x80
    return bytes(big_endian[::-1])


def largest_bcd(length: int, signed: bool) -> int:
    """The largest magnitude `length` bytes hold (the sign bit leaves 0..7 for the top digit)."""
    top = 8 if signed else 10
    return top * 10 ** (2 * length - 1) - 1
