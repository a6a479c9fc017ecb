"""Meter profiles: register maps kept as data files (drivers/profiles/*.toml) or inline in a config."""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import pairwise
from typing import Any

from drivers.vocabulary import vocabulary

REGISTER_WORDS = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "u64": 4, "s64": 4, "f32": 2, "f64": 4}
FUNCTIONS = {3: "holding", 4: "input"}
ORDERS = ("big", "little")
MAX_REGISTERS = 125  # Modbus limit for one FC03/FC04 read (FACTS.md section 6)
DEFAULT_MAX_HOLE = 7
ASCII = "ascii"  # identification registers holding text, two characters per register


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
    # Raw bit patterns (the words as one unsigned number, most significant first after applying
    # word_order and byte_order) with which the meter says "no value", e.g. 0xFFFF or 0x7FFFFFFF.
    invalid: tuple[int, ...] = ()

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


@dataclass(frozen=True)
class ReadRules:
    """How a meter wants to be read: see docs/PROFILES.md, section [reads]."""

    max_hole: int = DEFAULT_MAX_HOLE
    max_registers: int = MAX_REGISTERS
    # A read never contains both `barrier - 1` and `barrier`: the meter refuses such blocks.
    barriers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Identify:
    """A register whose value names the model, for `cgw scan` (docs/PROFILES.md, [identify])."""

    function: int
    address: int
    type: str  # a REGISTER_WORDS type or "ascii"
    words: int
    values: tuple[int | str, ...]
    word_order: str = "big"
    byte_order: str = "big"

    def value(self, words: Sequence[int]) -> int | str:
        """What the register holds: text (NULs and spaces trimmed) or the raw unsigned number."""
        ordered = list(words) if self.word_order == "big" else list(reversed(words))
        if self.byte_order == "little":
            ordered = [(w & 0xFF) << 8 | w >> 8 for w in ordered]
        raw = b"".join(w.to_bytes(2, "big") for w in ordered)
        if self.type == ASCII:
            return raw.decode("latin-1").strip("\x00 ")
        return int.from_bytes(raw, "big", signed=self.type.startswith("s"))

    def matches(self, words: Sequence[int]) -> bool:
        return self.value(words) in self.values


@dataclass(frozen=True)
class Profile:
    name: str
    model: str
    maker: str
    source: str
    registers: tuple[Register, ...]
    reads: ReadRules = ReadRules()
    identify: Identify | None = None

    def select(self, quantities: tuple[str, ...] | None) -> tuple[Register, ...]:
        if quantities is None:
            return self.registers
        return tuple(r for r in self.registers if r.quantity in quantities)


_REGISTER_KEYS = {
    "function",
    "address",
    "type",
    "word_order",
    "byte_order",
    "scale",
    "offset",
    "invalid",
}
_TOP_KEYS = {"model", "maker", "source", "defaults", "quantities", "reads", "identify"}
_READS_KEYS = {"max_hole", "max_registers", "barriers"}
_IDENTIFY_KEYS = {"function", "address", "type", "words", "values", "word_order", "byte_order"}


def _number(origin: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(origin, key, f"must be a number, not {value!r}")
    return float(value)


def _integer(origin: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProfileError(origin, key, f"must be an integer {low}..{high}, not {value!r}")
    return value


def _reject_unknown(origin: str, prefix: str, spec: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(spec) - known
    if unknown:
        raise ProfileError(origin, f"{prefix}{sorted(unknown)[0]}", "unknown key")


def _one_of(value: Any, choices: Collection[Any]) -> bool:
    """`value in choices`, false for a value TOML made a table or an array (unhashable)."""
    return isinstance(value, Hashable) and value in choices


def _function(origin: str, key: str, function: Any) -> int:
    if not _one_of(function, FUNCTIONS):
        raise ProfileError(origin, key, f"must be 3 or 4, not {function!r}")
    return int(function)


def _orders(origin: str, key: str, spec: Mapping[str, Any]) -> tuple[str, str]:
    for order_key in ("word_order", "byte_order"):
        if not _one_of(spec.get(order_key, "big"), ORDERS):
            raise ProfileError(origin, f"{key}.{order_key}", "must be 'big' or 'little'")
    return spec.get("word_order", "big"), spec.get("byte_order", "big")


def _invalid(origin: str, key: str, value: Any, words: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ProfileError(origin, key, "must be a list of raw register values such as [0xFFFF]")
    largest = (1 << (16 * words)) - 1
    return tuple(_integer(origin, f"{key}[{i}]", v, 0, largest) for i, v in enumerate(value))


def _register(origin: str, key: str, quantity: str, spec: Mapping[str, Any]) -> Register:
    _reject_unknown(origin, f"{key}.", spec, _REGISTER_KEYS)
    for needed in ("function", "address", "type"):
        if needed not in spec:
            raise ProfileError(origin, f"{key}.{needed}", "missing (and no default)")
    function = _function(origin, f"{key}.function", spec["function"])
    address = spec["address"]
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise ProfileError(
            origin, f"{key}.address", f"must be an integer 0..65535, not {address!r}"
        )
    rtype = spec["type"]
    if not _one_of(rtype, REGISTER_WORDS):
        raise ProfileError(
            origin, f"{key}.type", f"must be one of {', '.join(REGISTER_WORDS)}, not {rtype!r}"
        )
    if address + REGISTER_WORDS[rtype] - 1 > 0xFFFF:
        raise ProfileError(origin, f"{key}.address", "register runs past 0xFFFF")
    word_order, byte_order = _orders(origin, key, spec)
    scale = _number(origin, f"{key}.scale", spec.get("scale", 1))
    if scale == 0:
        raise ProfileError(origin, f"{key}.scale", "must not be 0")
    return Register(
        quantity=quantity,
        function=function,
        address=address,
        type=rtype,
        word_order=word_order,
        byte_order=byte_order,
        scale=scale,
        offset=_number(origin, f"{key}.offset", spec.get("offset", 0)),
        invalid=_invalid(origin, f"{key}.invalid", spec.get("invalid", []), REGISTER_WORDS[rtype]),
    )


def _reads(origin: str, spec: Any) -> ReadRules:
    if not isinstance(spec, Mapping):
        raise ProfileError(origin, "reads", "must be a table")
    _reject_unknown(origin, "reads.", spec, _READS_KEYS)
    barriers = spec.get("barriers", [])
    if not isinstance(barriers, list):
        raise ProfileError(origin, "reads.barriers", "must be a list of register addresses")
    return ReadRules(
        max_hole=_integer(origin, "reads.max_hole", spec.get("max_hole", DEFAULT_MAX_HOLE), 0, 124),
        max_registers=_integer(
            origin, "reads.max_registers", spec.get("max_registers", MAX_REGISTERS), 1, 125
        ),
        barriers=tuple(
            sorted(
                {
                    _integer(origin, f"reads.barriers[{i}]", b, 1, 0xFFFF)
                    for i, b in enumerate(barriers)
                }
            )
        ),
    )


def _identify(origin: str, spec: Any) -> Identify:
    if not isinstance(spec, Mapping):
        raise ProfileError(origin, "identify", "must be a table")
    _reject_unknown(origin, "identify.", spec, _IDENTIFY_KEYS)
    for needed in ("function", "address", "type", "values"):
        if needed not in spec:
            raise ProfileError(origin, f"identify.{needed}", "missing")
    function = _function(origin, "identify.function", spec["function"])
    rtype = spec["type"]
    if rtype != ASCII and not _one_of(rtype, REGISTER_WORDS):
        raise ProfileError(
            origin,
            "identify.type",
            f"must be one of {', '.join(REGISTER_WORDS)} or {ASCII}, not {rtype!r}",
        )
    if rtype == ASCII:
        words = _integer(origin, "identify.words", spec.get("words"), 1, MAX_REGISTERS)
    elif "words" in spec:
        raise ProfileError(origin, "identify.words", f"only for type {ASCII!r}")
    else:
        words = REGISTER_WORDS[rtype]
    address = _integer(origin, "identify.address", spec["address"], 0, 0x10000 - words)
    values = spec["values"]
    if not isinstance(values, list) or not values:
        raise ProfileError(origin, "identify.values", "must be a non-empty list")
    wanted = str if rtype == ASCII else int
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ProfileError(
                origin, f"identify.values[{i}]", f"must be a {wanted.__name__}, not {value!r}"
            )
    word_order, byte_order = _orders(origin, "identify", spec)
    return Identify(function, address, rtype, words, tuple(values), word_order, byte_order)


def _check_layout(origin: str, registers: list[Register], reads: ReadRules) -> None:
    """No two registers share a word; none straddles a barrier or is longer than a read."""
    by_place = sorted(registers, key=lambda r: (r.function, r.address))
    for before, after in pairwise(by_place):
        if before.function == after.function and after.address < before.address + before.words:
            raise ProfileError(
                origin,
                f"quantities.{after.quantity}.address",
                f"overlaps quantities.{before.quantity} (0x{before.address:04X}+{before.words})",
            )
    for register in registers:
        key = f"quantities.{register.quantity}"
        if register.words > reads.max_registers:
            raise ProfileError(origin, key, "longer than reads.max_registers")
        for barrier in reads.barriers:
            if register.address < barrier < register.address + register.words:
                raise ProfileError(origin, key, f"straddles the read barrier 0x{barrier:04X}")


def profile_from_mapping(name: str, data: Mapping[str, Any], origin: str) -> Profile:
    """Build a profile from parsed TOML; errors name `origin` and the key path inside it."""
    for text_key in ("model", "maker", "source"):
        if not isinstance(data.get(text_key, ""), str):
            raise ProfileError(origin, text_key, "must be a string")
    _reject_unknown(origin, "", data, _TOP_KEYS)
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
    reads = _reads(origin, data.get("reads", {}))
    _check_layout(origin, registers, reads)
    return Profile(
        name=name,
        model=data.get("model", name),
        maker=data.get("maker", ""),
        source=data.get("source", ""),
        registers=tuple(registers),
        reads=reads,
        identify=_identify(origin, data["identify"]) if "identify" in data else None,
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
