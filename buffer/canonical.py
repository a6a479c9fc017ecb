"""RFC 8785 (JCS) canonical JSON, fast enough for the seal path.

Records are canonicalised once, when they are committed; an envelope is then assembled around the
stored record bytes (`Raw`) instead of re-encoding every record at seal time. The output is checked
against an independent JCS implementation (the `rfc8785` package) in tests/test_canonical.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1
_encode_string = json.JSONEncoder(ensure_ascii=False).encode


class Raw(bytes):
    """Bytes that are already canonical JSON and are inserted as they are."""


class CanonicalError(ValueError):
    pass


def format_number(value: float | int) -> str:
    """A number as ECMAScript's Number.prototype.toString writes it (RFC 8785 section 3.2.2.3)."""
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalError(f"integer {value} is beyond the range JSON numbers keep exactly")
        return str(value)
    if not math.isfinite(value):
        raise CanonicalError(f"{value!r} has no JSON form")
    if value == 0:
        return "0"
    if 1e-4 <= abs(value) < 1e16:
        # Here repr() already writes the shortest round-trip digits in plain notation, as
        # ECMAScript does; only an integral value loses its ".0".
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    significant = (whole + fraction).lstrip("0")
    # value = 0.DIGITS x 10**point
    point = len(whole) + int(exponent or 0) - (len(whole) + len(fraction) - len(significant))
    digits = significant.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        text = digits + "0" * (point - k)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        e = point - 1
        text = (
            (digits[0] + ("." + digits[1:] if k > 1 else ""))
            + ("e+" if e >= 0 else "e-")
            + str(abs(e))
        )
    return sign + text


def _key(item: tuple[str, Any]) -> bytes:
    return item[0].encode("utf-16-be")


def _write(value: Any, out: list[str | bytes]) -> None:
    if isinstance(value, Raw):
        out.append(value)
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int | float):
        out.append(format_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in sorted(value.items(), key=_key):
            if not isinstance(key, str):
                raise CanonicalError(f"object key {key!r} is not a string")
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalError(f"{type(value).__name__} has no JSON form")


def canonical(value: Any) -> bytes:
    parts: list[str | bytes] = []
    _write(value, parts)
    return b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in parts)
