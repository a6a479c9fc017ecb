"""Meter profiles: register maps kept as data files (drivers/profiles/*.toml) or inline in a config."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from drivers.vocabulary import vocabulary

REGISTER_WORDS = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "u64": 4, "s64": 4, "f32": 2, "f64": 4}
FUNCTIONS = {3: "holding", 4: "input"}
ORDERS = ("big", "little")


class ProfileError(ValueError):
    """A profile is wrong: `key` is the path inside it (e.g. `quantities.voltage_l1_v.address`)."""

    def __init__(self, origin: str, key: str, message: str) -> None:
        super().__init__(f"{origin}: {key}: {message}")
        self.origin = origin
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Register:
    quantity: str
    function: int
    address: int
    type: str
    word_order: str = "big"
    byte_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


@dataclass(frozen=True)
class Profile:
    name: str
    model: str
    maker: str
    source: str
    registers: tuple[Register, ...]

    def select(self, quantities: tuple[str, ...] | None) -> tuple[Register, ...]:
        if quantities is None:
            return self.registers
        return tuple(r for r in self.registers if r.quantity in quantities)


_REGISTER_KEYS = {"function", "address", "type", "word_order", "byte_order", "scale", "offset"}


def _number(origin: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(origin, key, f"must be a number, not {value!r}")
    return float(value)


def _register(origin: str, key: str, quantity: str, spec: Mapping[str, Any]) -> Register:
    unknown = set(spec) - _REGISTER_KEYS
    if unknown:
        raise ProfileError(origin, f"{key}.{sorted(unknown)[0]}", "unknown key")
    for needed in ("function", "address", "type"):
        if needed not in spec:
            raise ProfileError(origin, f"{key}.{needed}", "missing (and no default)")
    function = spec["function"]
    if function not in FUNCTIONS:
        raise ProfileError(origin, f"{key}.function", f"must be 3 or 4, not {function!r}")
    address = spec["address"]
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise ProfileError(
            origin, f"{key}.address", f"must be an integer 0..65535, not {address!r}"
        )
    rtype = spec["type"]
    if rtype not in REGISTER_WORDS:
        raise ProfileError(
            origin, f"{key}.type", f"must be one of {', '.join(REGISTER_WORDS)}, not {rtype!r}"
        )
    if address + REGISTER_WORDS[rtype] - 1 > 0xFFFF:
        raise ProfileError(origin, f"{key}.address", "register runs past 0xFFFF")
    for order_key in ("word_order", "byte_order"):
        if spec.get(order_key, "big") not in ORDERS:
            raise ProfileError(origin, f"{key}.{order_key}", "must be 'big' or 'little'")
    scale = _number(origin, f"{key}.scale", spec.get("scale", 1))
    if scale == 0:
        raise ProfileError(origin, f"{key}.scale", "must not be 0")
    return Register(
        quantity=quantity,
        function=function,
        address=address,
        type=rtype,
        word_order=spec.get("word_order", "big"),
        byte_order=spec.get("byte_order", "big"),
        scale=scale,
        offset=_number(origin, f"{key}.offset", spec.get("offset", 0)),
    )


def profile_from_mapping(name: str, data: Mapping[str, Any], origin: str) -> Profile:
    """Build a profile from parsed TOML; errors name `origin` and the key path inside it."""
    for text_key in ("model", "maker", "source"):
        if not isinstance(data.get(text_key, ""), str):
            raise ProfileError(origin, text_key, "must be a string")
    unknown = set(data) - {"model", "maker", "source", "defaults", "quantities"}
    if unknown:
        raise ProfileError(origin, sorted(unknown)[0], "unknown key")
    defaults = data.get("defaults", {})
    quantities = data.get("quantities")
    if not isinstance(defaults, Mapping):
        raise ProfileError(origin, "defaults", "must be a table")
    if not isinstance(quantities, Mapping) or not quantities:
        raise ProfileError(
            origin, "quantities", "must be a non-empty table of quantity = {address…}"
        )
    known = vocabulary()
    registers = []
    for quantity, spec in quantities.items():
        key = f"quantities.{quantity}"
        if quantity not in known:
            raise ProfileError(
                origin, key, "not in the quantity vocabulary (see docs/VOCABULARY.md)"
            )
        if not isinstance(spec, Mapping):
            raise ProfileError(origin, key, "must be a table such as { address = 0x0000 }")
        registers.append(_register(origin, key, quantity, {**defaults, **spec}))
    return Profile(
        name=name,
        model=data.get("model", name),
        maker=data.get("maker", ""),
        source=data.get("source", ""),
        registers=tuple(registers),
    )


def shipped_profiles() -> list[str]:
    folder = resources.files("drivers").joinpath("profiles")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


@cache
def load_shipped_profile(name: str) -> Profile:
    """Load a profile shipped with cgw by name (e.g. `eastron_sdm630`); KeyError if there is none."""
    if name not in shipped_profiles():
        raise KeyError(name)
    path = resources.files("drivers").joinpath("profiles", f"{name}.toml")
    return profile_from_mapping(name, tomllib.loads(path.read_text(encoding="utf-8")), str(path))
