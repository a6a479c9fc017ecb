"""A small TOML writer for the generated config (the standard library reads TOML but cannot write).

Top-level tables and their sub-tables become `[sections]`, arrays of tables `[[sections]]`; a table
of plain values deeper down, or inside an array element, is written inline (`{ a = 1 }`). The output
is deterministic: the same data gives the same bytes, so re-provisioning keeps the file unchanged.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def key(name: str) -> str:
    return name if BARE_KEY.match(name) else string(name)


def string(text: str) -> str:
    out = []
    for ch in text:
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, Mapping):
        items = ", ".join(f"{key(str(k))} = {value(x)}" for k, x in v.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _section(path: list[str], table: Mapping[str, Any], depth: int, out: list[str]) -> None:
    """Write the plain keys of `table`, then its sub-tables and arrays of tables."""
    subtables = []
    arrays = []
    for k, v in table.items():
        if isinstance(v, Mapping) and (
            depth < 1 or any(isinstance(x, Mapping) for x in v.values())
        ):
            subtables.append((k, v))
        elif _is_table_array(v) and depth < 1:
            arrays.append((k, v))
        else:
            out.append(f"{key(str(k))} = {value(v)}")
    for k, v in subtables:
        sub = [*path, key(str(k))]
        out.extend(["", f"[{'.'.join(sub)}]"])
        _section(sub, v, depth + 1, out)
    for k, v in arrays:
        sub = [*path, key(str(k))]
        for element in v:
            out.extend(["", f"[[{'.'.join(sub)}]]"])
            for ek, ev in element.items():
                out.append(f"{key(str(ek))} = {value(ev)}")


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    plain = {k: v for k, v in data.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
    for k, v in plain.items():
        out.append(f"{key(str(k))} = {value(v)}")
    for k, v in data.items():
        if k in plain:
            continue
        if isinstance(v, Mapping):
            out.extend(["", f"[{key(str(k))}]"])
            _section([key(str(k))], v, 0, out)
        else:
            for element in v:
                out.extend(["", f"[[{key(str(k))}]]"])
                _section([key(str(k))], element, 1, out)
    text = "\n".join(out).lstrip("\n")
    return text + "\n"
