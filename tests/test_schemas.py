"""docs/schemas/: valid JSON Schemas, applied strictly by the tests and openly by consumers.

That every message a running gateway publishes validates is checked where a real daemon publishes
all kinds of them (tests/test_accounting_e2e.py); here, what the schemas themselves promise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from buffer.canonical import canonical
from buffer.envelope import GENESIS_PREV, seal
from drivers.snapshot import Snapshot
from tests.support.keys import make_signer
from tests.support.schemas import SCHEMAS, problems, schema_for


def reading_envelope(tmp_path: Path, **extra: object) -> dict[str, Any]:
    record = Snapshot(
        "main-incomer",
        1732233600123,
        "out_of_range",
        values={"active_power_w": 4210.5, "voltage_l1_v": 999.5},
        flags={"voltage_l1_v": "out_of_range", "frequency_hz": "invalid"},
        clock_unsynced=True,
    ).record()
    failed = Snapshot("meter-2", 1732233600200, "timeout", error="no answer").record()
    sealed = seal(
        make_signer(tmp_path),
        gateway="gw-1",
        site="plant-a",
        stream="readings",
        seq=1,
        prev=GENESIS_PREV,
        created_ms=1732233601000,
        records=[canonical({**record, **extra}), canonical(failed)],
    )
    return dict(json.loads(sealed.body))


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    files = sorted(SCHEMAS.glob("*.schema.json"))
    assert {f.name.split(".")[0] for f in files} >= {
        "common", "status", "meta", "readings", "intervals", "alarms", "command", "reply"
    }  # fmt: skip
    for file in files:
        schema = json.loads(file.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith("/v1/" + file.name)


def test_a_sealed_envelope_validates_and_damage_is_named(tmp_path: Path) -> None:
    envelope = reading_envelope(tmp_path)
    assert problems("readings", envelope) == []
    bad = {**envelope, "seq": 0, "stream": "intervals"}
    found = problems("readings", bad)
    assert any(p.startswith("seq:") for p in found) and any(p.startswith("stream:") for p in found)
    record = envelope["records"][0]
    wrong = {**envelope, "records": [{**record, "quality": "fine"}]}
    assert [p.split(":")[0] for p in problems("readings", wrong)] == ["records/0/quality"]


def test_the_tests_reject_what_the_schemas_do_not_document_consumers_accept_it(
    tmp_path: Path,
) -> None:
    envelope = reading_envelope(tmp_path, humidity="high")
    assert any("humidity" in p for p in problems("readings", envelope))
    # A consumer with the published (open) schemas takes a field added within v1.
    published = Registry().with_resources(
        (s["$id"], Resource.from_contents(s))
        for s in (json.loads(f.read_text()) for f in SCHEMAS.glob("*.schema.json"))
    )
    readings = json.loads((SCHEMAS / "readings.schema.json").read_text())
    assert not list(Draft202012Validator(readings, registry=published).iter_errors(envelope))


@pytest.mark.parametrize(
    ("topic", "schema"),
    [
        ("cgw/v1/plant-a/gw-1/status", "status"),
        ("cgw/v1/plant-a/gw-1/readings", "readings"),
        ("cgw/v1/plant-a/gw-1/cmd/ping/reply", "reply"),
    ],
)
def test_topics_map_to_their_schema(topic: str, schema: str) -> None:
    assert schema_for(topic) == schema


def test_the_asyncapi_document_names_every_topic_and_existing_schemas() -> None:
    document = json.loads((SCHEMAS.parent / "asyncapi.json").read_text())
    assert document["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in document["channels"].values()}
    for leaf in (
        "status",
        "meta",
        "readings",
        "intervals",
        "alarms",
        "cmd/{name}",
        "cmd/{name}/reply",
    ):
        assert f"cgw/v1/{{site}}/{{gateway}}/{leaf}" in addresses
    for message in document["components"]["messages"].values():
        target = SCHEMAS.parent / message["payload"]["schema"]["$ref"]
        assert target.is_file(), target
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in document["channels"]
