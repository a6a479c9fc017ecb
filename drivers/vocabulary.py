"""The quantity vocabulary shared by profiles, the buffer and the MQTT contract."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class QuantityDef:
    name: str
    description: str
    unit: str
    kind: str  # "counter" or "gauge"
    min: float
    max: float

    def plausible(self, value: float) -> bool:
        return self.min <= value <= self.max


@cache
def vocabulary() -> dict[str, QuantityDef]:
    text = resources.files("drivers").joinpath("vocabulary.toml").read_text(encoding="utf-8")
    return {
        name: QuantityDef(
            name=name,
            description=entry["description"],
            unit=entry["unit"],
            kind=entry["kind"],
            min=float(entry["min"]),
            max=float(entry["max"]),
        )
        for name, entry in tomllib.loads(text).items()
    }
