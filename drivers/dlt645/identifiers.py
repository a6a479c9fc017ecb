"""The DL/T 645-2007 data identifiers cgw knows (identifiers.toml) and what to read from a meter."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from drivers.dlt645.bcd import decode_bcd, encode_bcd, largest_bcd
from drivers.dlt645.frame import normalise_address, normalise_di
from drivers.vocabulary import vocabulary


@dataclass(frozen=True)
class Identifier:
    di: str
    quantity: str
    length: int
    decimals: int
    signed: bool
    factor: float
    format: str

    def decode(self, raw: bytes) -> float | None:
        """The value in vocabulary units; None when the bytes are not a number."""
        value = decode_bcd(raw, self.decimals, self.signed)
        return None if value is None else value * self.factor

    def encode(self, value: float) -> bytes:
        """Vocabulary units to the meter's bytes, saturating at the largest number that fits."""
        limit = largest_bcd(self.length, self.signed) / 10**self.decimals
        meter_value = max(-limit if self.signed else 0.0, min(limit, value / self.factor))
        return encode_bcd(meter_value, self.length, self.decimals, self.signed)


@cache
def identifiers() -> dict[str, Identifier]:
    text = resources.files("drivers.dlt645").joinpath("identifiers.toml").read_text("utf-8")
    return {
        normalise_di(di): Identifier(
            di=normalise_di(di),
            quantity=entry["quantity"],
            length=int(entry["length"]),
            decimals=int(entry["decimals"]),
            signed=bool(entry["signed"]),
            factor=float(entry["factor"]),
            format=entry["format"],
        )
        for di, entry in tomllib.loads(text)["identifiers"].items()
    }


# What a three-phase meter is asked by default: everything with a vocabulary quantity.
DEFAULT_IDENTIFIERS = (
    "00010000",
    "00020000",
    "02010100",
    "02010200",
    "02010300",
    "02020100",
    "02020200",
    "02020300",
    "02030000",
    "02030100",
    "02030200",
    "02030300",
    "02060000",
    "02800002",
)


@dataclass(frozen=True)
class Dlt645Device:
    """One DL/T 645 meter on a serial bus: its 12-digit address and the identifiers to read."""

    id: str
    address: str
    identifiers: tuple[str, ...] = DEFAULT_IDENTIFIERS
    interval_s: float = 5.0
    bus: str = ""

    def quantity_units(self) -> dict[str, str]:
        known, words = identifiers(), vocabulary()
        return {known[di].quantity: words[known[di].quantity].unit for di in self.identifiers}

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalise_address(self.address))
        known = identifiers()
        for di in self.identifiers:
            if normalise_di(di) not in known:
                raise ValueError(
                    f"device {self.id}: no DL/T 645 identifier {di} in identifiers.toml"
                )
        object.__setattr__(self, "identifiers", tuple(normalise_di(d) for d in self.identifiers))
