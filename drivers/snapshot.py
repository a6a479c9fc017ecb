"""One device's readings at one moment: what a driver hands to the buffer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from drivers.vocabulary import vocabulary

# Record-level quality. `ok` and `out_of_range` carry values; the others carry an `error` instead.
OK = "ok"
OUT_OF_RANGE = "out_of_range"
TIMEOUT = "timeout"
EXCEPTION = "exception"
INVALID_RESPONSE = "invalid_response"
NO_CONNECTION = "no_connection"
QUALITIES = (OK, OUT_OF_RANGE, TIMEOUT, EXCEPTION, INVALID_RESPONSE, NO_CONNECTION)

# Quantity-level flags, in `Snapshot.flags`.
FLAG_OUT_OF_RANGE = "out_of_range"
FLAG_INVALID = "invalid"


@dataclass(slots=True)
class Snapshot:
    device: str
    ts_ms: int
    quality: str
    values: dict[str, float] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    clock_unsynced: bool = False  # taken before the wall clock was synchronised

    def record(self) -> dict[str, object]:
        """The record as the MQTT contract publishes it (docs/CONTRACT.md)."""
        out: dict[str, object] = {
            "device": self.device,
            "ts": self.ts_ms,
            "quality": self.quality,
            "values": self.values,
        }
        if self.flags:
            out["flags"] = self.flags
        if self.error is not None:
            out["error"] = self.error
        if self.clock_unsynced:
            out["clock"] = "unsynced"
        return out


def judged(device: str, ts_ms: int, decoded: Iterable[tuple[str, float | None]]) -> Snapshot:
    """A snapshot of decoded values: None (the meter marked it invalid) is flagged `invalid` and
    left out; a value outside its quantity's plausible range is kept and flagged `out_of_range`."""
    known = vocabulary()
    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    for quantity, value in decoded:
        if value is None:
            flags[quantity] = FLAG_INVALID
            continue
        values[quantity] = value
        definition = known.get(quantity)
        if definition is not None and not definition.plausible(value):
            flags[quantity] = FLAG_OUT_OF_RANGE
    return Snapshot(device, ts_ms, OUT_OF_RANGE if flags else OK, values=values, flags=flags)
