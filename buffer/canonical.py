"""RFC 8785 (JCS) canonical JSON, fast enough for the seal path.

Records are canonicalised once, when they are committed; an envelope is then assembled around the
stored record bytes (`Raw`) instead of re-encoding every record at seal time. The output is checked
against an independent JCS implementation (the `rfc8785` package) in tests/test_canonical.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

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


# Fast path for plain data (exact dict, list, tuple, str, int, float, bool, None), which is what a
# reading record is. It gives the same text as `_write` or None, and on None (anything else: Raw,
# other mappings or sequences, non-string keys, non-finite or unsafe numbers) `_write` decides.
# Objects with the same keys share one sorted key order, with each key already encoded.
_ORDERS: dict[tuple[Any, ...], tuple[tuple[tuple[str, str], ...], bool] | None] = {}
_MAX_ORDERS = 1024
_encode_basestring: Callable[[str], str] = json.encoder.encode_basestring  # as _encode_string
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]+")


def _order(keys: tuple[Any, ...]) -> tuple[tuple[tuple[str, str], ...], bool] | None:
    """The keys in JCS order, each with its encoded `"key":` prefix, and whether all are plain
    identifiers (nothing to escape, the same order in UTF-16 and in code points)."""
    order = _ORDERS.get(keys)
    if order is None and keys not in _ORDERS:
        if all(type(k) is str for k in keys):
            ordered = sorted(keys, key=lambda k: k.encode("utf-16-be"))
            prefixes = tuple((k, _encode_basestring(k) + ":") for k in ordered)
            order = prefixes, all(_PLAIN_KEY.fullmatch(k) for k in keys)
        if len(_ORDERS) >= _MAX_ORDERS:
            _ORDERS.clear()
        _ORDERS[keys] = order
    return order


# A flat object of numbers (a snapshot's values) is written by orjson, whose shortest round-trip
# float digits are the ones repr() gives, in a tenth of the time. Its text differs from JCS only
# where `_number_object` looks: "1.0" for 1, exponents from 1e16 and below 1e-5, "-0.0", NaN.
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_SUBCLASS


def _number_object(value: dict[str, Any]) -> str | None:
    try:
        # A sum is finite only if every value is a finite number (or it overflows: no fast path).
        if not math.isfinite(sum(value.values())):
            return None
        out = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except (TypeError, OverflowError):  # a string, object, subclass or unsafe integer inside
        return None
    # Plain keys hold no "+" or "-", so these can only come from a number.
    if b"+" in out:
        return None
    if b"-" in out and (b"e-" in out or b":-0.0," in out or out.endswith(b":-0.0}")):
        return None
    return out.replace(b".0,", b",").replace(b".0}", b"}").decode()


def _text(value: Any) -> str | None:
    kind = type(value)
    if kind is float:
        return format_number(value) if math.isfinite(value) else None
    if kind is str:
        return _encode_basestring(value)
    if kind is dict:
        order = _order(tuple(value))
        if order is None:
            return None
        prefixes, plain = order
        if plain and value and type(next(iter(value.values()))) is float:
            text = _number_object(value)
            if text is not None:
                return text
        parts = []
        for key, prefix in prefixes:
            item = value[key]
            if type(item) is float and 1e-4 <= abs(item) < 1e16:  # format_number's common case
                number = repr(item)
                parts.append(prefix + (number[:-2] if number[-2:] == ".0" else number))
                continue
            text = _text(item)
            if text is None:
                return None
            parts.append(prefix + text)
        return "{" + ",".join(parts) + "}"
    if kind is int:
        return str(value) if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else None
    if kind is list or kind is tuple:
        texts = []
        for item in value:
            text = _text(item)
            if text is None:
                return None
            texts.append(text)
        return "[" + ",".join(texts) + "]"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return None


def canonical(value: Any) -> bytes:
    try:
        text = _text(value)
        if text is not None:
            return text.encode("utf-8")
    except (RecursionError, UnicodeEncodeError):
        pass  # the general path below gives the error it always gave
    parts: list[str | bytes] = []
    _write(value, parts)
    return b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in parts)
