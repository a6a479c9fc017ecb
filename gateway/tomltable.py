"""Reading a TOML table with its key path, so that every mistake names the file and the key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

# Topic-safe identifiers: no MQTT wildcards, no level separators, nothing a shell would mangle.
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConfigError(Exception):
    def __init__(self, path: str, key: str, message: str) -> None:
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")
        self.path = path
        self.key = key
        self.message = message


T = TypeVar("T")
MISSING = object()


class Table:
    """A TOML table being read, with its key path for error messages."""

    def __init__(self, path: str, key: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, key, "must be a table")
        self.path, self.key, self.data = path, key, data
        self.read: set[str] = set()

    def at(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.path, self.at(name), message)

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any = MISSING) -> Any:
        self.read.add(name)
        if name not in self.data:
            if default is MISSING:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"must be {describe(kinds)}, not {value!r}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.error(name, f"must be {describe(kinds)}, not {value!r}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = float(self.get(name, float, default))
        if not low <= value <= high:
            raise self.error(name, f"must be between {low:g} and {high:g}, not {value:g}")
        return value

    def integer(self, name: str, default: Any, low: int, high: int) -> int:
        value = int(self.get(name, int, default))
        if not low <= value <= high:
            raise self.error(name, f"must be between {low} and {high}, not {value}")
        return value

    def choice(self, name: str, choices: tuple[Any, ...], default: Any = MISSING) -> Any:
        value = self.get(name, (str, int), default)
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise self.error(name, f"must be one of {listed}, not {value!r}")
        return value

    def identifier(self, name: str, default: Any = MISSING) -> str:
        value = self.get(name, str, default)
        if not IDENTIFIER.match(value):
            raise self.error(
                name,
                f"{value!r} is not a valid identifier (letters, digits, '.', '_', '-'; "
                "at most 64; no spaces, '/', '+' or '#')",
            )
        return str(value)

    def table(self, name: str) -> Table:
        self.read.add(name)
        return Table(self.path, self.at(name), self.data.get(name, {}))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self.error(unknown[0], "unknown key (misspelt?)")


def describe(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def array(root: Table, name: str) -> list[Table]:
    root.read.add(name)
    items = root.data.get(name, [])
    if not isinstance(items, list):
        raise root.error(name, f"must be an array of tables ([[{name}]])")
    return [Table(root.path, f"{root.at(name)}[{i}]", item) for i, item in enumerate(items)]
