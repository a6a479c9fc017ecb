"""One device's readings at one moment: what a driver hands to the buffer."""

from __future__ import annotations

from dataclasses import dataclass, field

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
        return out
