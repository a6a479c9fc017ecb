"""The contract's JSON Schemas (docs/schemas/) as the tests apply them: strictly.

The published schemas leave objects open (within v1 fields are only added, and a consumer must not
reject a newer gateway). The tests close every object that lists its properties: a field the
gateway emits but the schemas do not document fails the test. Objects used as mixins (the target
of an `allOf` reference) stay open; the schema that includes them is closed instead, through
`unevaluatedProperties`.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
# The topic's last level (or the last two for command replies) -> the schema of its payload.
BY_LEAF = {
    "status": "status",
    "meta": "meta",
    "readings": "readings",
    "intervals": "intervals",
    "alarms": "alarms",
    "reply": "reply",
}


def _mixins(schemas: dict[str, Any]) -> set[tuple[str, str]]:
    """(file, JSON pointer) of every schema that an `allOf` pulls in by reference."""
    found: set[tuple[str, str]] = set()

    def walk(name: str, node: object) -> None:
        if isinstance(node, dict):
            for item in node.get("allOf", []):
                ref = item.get("$ref", "")
                file, _, pointer = ref.partition("#")
                found.add((file or name, pointer))
            for value in node.values():
                walk(name, value)
        elif isinstance(node, list):
            for value in node:
                walk(name, value)

    for name, schema in schemas.items():
        walk(name, schema)
    return found


def _closed(name: str, node: Any, pointer: str, mixins: set[tuple[str, str]]) -> Any:
    if isinstance(node, list):
        return [_closed(name, v, f"{pointer}/{i}", mixins) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(name, v, f"{pointer}/{k}", mixins) for k, v in node.items()}
    open_keys = {"additionalProperties", "unevaluatedProperties"}
    if "properties" in node and not open_keys & node.keys() and (name, pointer) not in mixins:
        out["unevaluatedProperties"] = False
    return out


@cache
def registry() -> Registry:
    raw = {p.name: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))}
    mixins = _mixins(raw)
    resources = []
    for name, schema in raw.items():
        strict = _closed(name, copy.deepcopy(schema), "", mixins)
        resources.append((schema["$id"], Resource.from_contents(strict)))
    return Registry().with_resources(resources)


@cache
def validator(schema: str) -> Draft202012Validator:
    base = json.loads((SCHEMAS / f"{schema}.schema.json").read_text())["$id"]
    contents = registry().contents(base)
    Draft202012Validator.check_schema(contents)
    return Draft202012Validator(contents, registry=registry(), format_checker=FormatChecker())


def problems(schema: str, payload: bytes | dict[str, Any]) -> list[str]:
    """Every way `payload` breaks `schema`, as `path: message` lines (empty when it is valid)."""
    document = json.loads(payload) if isinstance(payload, bytes) else payload
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator(schema).iter_errors(document)
    ]


def schema_for(topic: str) -> str:
    leaf = topic.rsplit("/", 1)[-1]
    if leaf not in BY_LEAF:
        raise KeyError(f"no schema for topic {topic}")
    return BY_LEAF[leaf]
