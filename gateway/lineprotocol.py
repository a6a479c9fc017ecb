"""Envelope records as InfluxDB line protocol, millisecond precision (docs/INFLUXDB.md).

Tags identify a series and never change between revisions of an interval record, so a revision
written later lands on the same series and timestamp and replaces the earlier one in InfluxDB.
Numbers are always written as floats (JSON `0` and `0.5` alike), counts always as integers: a
field keeps one type for good, as InfluxDB requires.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

log = logging.getLogger("cgw.influx")

READING = "cgw_reading"
POLL = "cgw_poll"
INTERVAL = "cgw_interval"
SITE = "cgw_site"
ALARM = "cgw_alarm"

# Counts: integer fields. Every other number is a float field.
INTEGER_FIELDS = frozenset(
    {"readings", "expected", "revision", "completeness_received", "completeness_expected"}
)
# Site record members written as fields, flattened with `_` (`electricity_grid_import_kwh`).
SITE_GROUPS = ("electricity", "co2e", "standard_coal", "completeness", "production")
ANSWERED = frozenset({"ok", "out_of_range"})

_NAME = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\\": "\\\\", "\n": " ", "\r": " "})
_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", "\\": "\\\\", "\n": " ", "\r": " "})
_STRING = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": " ", "\r": " "})

Tags = dict[str, Any]
Fields = dict[str, str]  # field key -> its encoded value


def number(value: object) -> str | None:
    """A float field's text, or None for what is not a finite number."""
    if type(value) is float:  # nearly every value: spare the checks below
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    as_float = float(value)
    return repr(as_float) if math.isfinite(as_float) else None


def integer(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return f"{value}i"


def string(value: str) -> str:
    return '"' + value.translate(_STRING) + '"'


def field(key: str, value: object) -> str | None:
    """A field value encoded by the key's type: integer counts, booleans, float numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return integer(value) if key in INTEGER_FIELDS else number(value)


def line(measurement: str, tags: Tags, fields: Fields, ts_ms: int) -> bytes | None:
    """One point; tags with empty or null values are left out (line protocol has none)."""
    if not fields:
        return None
    head = measurement.translate(_MEASUREMENT) + "".join(
        _tag(k.translate(_NAME), v) for k, v in sorted(tags.items())
    )
    body = ",".join(f"{k.translate(_NAME)}={v}" for k, v in fields.items())
    return f"{head} {body} {int(ts_ms)}".encode()


def flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            flatten(f"{prefix}_{key}", inner, out)
    else:
        out[prefix] = value


def encoded(values: Mapping[str, object]) -> Fields:
    fields = {}
    for key, value in values.items():
        text = field(key, value)
        if text is not None:
            fields[key] = text
    return fields


def _tag(key: str, value: object) -> str:
    """`,key=value` with the value escaped, or nothing for an empty or null value."""
    return "" if value is None or value == "" else f",{key}={str(value).translate(_NAME)}"


@functools.cache
def _quantity_tag(quantity: str) -> str:
    return _tag("quantity", quantity)


def reading_lines(r: Mapping[str, Any], base: Tags) -> Iterator[bytes | None]:
    """One `cgw_reading` point per value, and one `cgw_poll` point for the poll itself.

    The hot path of a drain: the tags are written out in `line`'s sorted order (clock, device,
    flag, gateway, quantity, site) without building and sorting a dict for every value."""
    ts = int(r["ts"])
    clock_device = _tag("clock", r.get("clock")) + _tag("device", r["device"])
    gateway, site = _tag("gateway", base.get("gateway")), _tag("site", base.get("site"))
    flags = r.get("flags") or {}
    for quantity, value in r["values"].items():
        text = number(value)
        if text is not None:
            flag = _tag("flag", flags.get(quantity)) if flags else ""
            yield (
                f"{READING}{clock_device}{flag}{gateway}{_quantity_tag(quantity)}{site} "
                f"value={text} {ts}"
            ).encode()
    ok = "1i" if r["quality"] in ANSWERED else "0i"
    quality = _tag("quality", r["quality"])
    yield f"{POLL}{clock_device}{gateway}{quality}{site} ok={ok} {ts}".encode()


def quality_fields(r: Mapping[str, Any]) -> Fields:
    flags = list(r["flags"])
    return {"flags": string(",".join(flags)), "ok": "1i" if flags == ["ok"] else "0i"}


def interval_lines(r: Mapping[str, Any], base: Tags) -> Iterator[bytes | None]:
    """A meter record as `cgw_interval`, a site record as `cgw_site`, at `start_ms`."""
    if r["kind"] == "meter":
        tags = {
            **base,
            "device": r["device"],
            "quantity": r["quantity"],
            "period": r["period"],
            "role": r["role"],
            "carrier": r.get("carrier"),
            "unit": r.get("unit"),
            "scope": r.get("scope"),
        }
        names = ("energy", "kwh", "kgco2e", "kgce", "held_out", "readings", "expected", "revision")
        fields = encoded({k: r.get(k) for k in names})
        yield line(INTERVAL, tags, {**fields, **quality_fields(r)}, r["start_ms"])
    elif r["kind"] == "site":
        flat: dict[str, object] = {}
        for group in SITE_GROUPS:
            members = dict(r.get(group) or {})
            members.pop("devices", None)  # per device: in the meter records' readings/expected
            flatten(group, members, flat)
        fields = {**encoded(flat), **encoded({"revision": r["revision"]}), **quality_fields(r)}
        yield line(SITE, {**base, "period": r["period"]}, fields, r["start_ms"])


def alarm_lines(r: Mapping[str, Any], base: Tags) -> Iterator[bytes | None]:
    """An alarm record as `cgw_alarm` at its `ts`: `active` is 1 while raised, numbers of its
    `detail` as `detail_*` float fields."""
    tags = {
        **base,
        "alarm": r["alarm"],
        "kind": r["kind"],
        "device": r.get("device"),
        "severity": r["severity"],
        "state": r["state"],
    }
    fields: Fields = {
        "active": "1i" if r["state"] == "raised" else "0i",
        "message": string(str(r.get("message", ""))),
    }
    for key, value in (r.get("detail") or {}).items():
        text = number(value)
        if text is not None:
            fields[f"detail_{key}"] = text
    yield line(ALARM, tags, fields, r["ts"])


ENCODERS = {"readings": reading_lines, "intervals": interval_lines, "alarms": alarm_lines}


def envelope_lines(body: bytes) -> tuple[list[bytes], int]:
    """The points of one stored envelope, and how many of its records could not be written
    (an unknown stream or a record without the fields above)."""
    envelope = orjson.loads(body)
    encoder = ENCODERS.get(envelope["stream"])
    records = envelope["records"]
    if encoder is None:
        return [], len(records)
    base = {"site": envelope["site"], "gateway": envelope["gateway"]}
    lines: list[bytes] = []
    skipped = 0
    for record in records:
        try:
            points = [p for p in encoder(record, base) if p is not None]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            skipped += 1
            log.debug("seq %s: a record not written to InfluxDB: %r", envelope.get("seq"), exc)
        else:
            lines.extend(points)
    return lines, skipped
