"""The accounting documents stay true to the code: config keys, flags and record fields.

docs/CONFIG.md must name every key the `[accounting]` parser reads, docs/ACCOUNTING.md must list
every data-quality flag in its flags table, and docs/CONTRACT.md must describe every field of the
records the accounting really publishes (produced here by running the service on a buffer).
"""

from __future__ import annotations

import ast
import json
import re
import sqlite3
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest

import drivers.pulse.counter
import drivers.snapshot
import gateway.accounting.energy
import gateway.accounting.ledger
import gateway.accounting.results
import gateway.accounting.settings
from buffer.store import Buffer
from drivers.snapshot import Snapshot
from gateway.accounting.service import ALARMS, INTERVALS, Accounting
from gateway.accounting.settings import ROLES, AccountingConfig
from gateway.clock import ClockWatch
from gateway.config import Config, parse
from gateway.daemon import accounting_meta

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
EXAMPLE = ROOT / "gateway" / "examples" / "gateway.toml"
# Calls in settings.py whose string argument is a key of the config: method -> argument index.
KEY_METHODS = {"get": 0, "number": 0, "integer": 0, "choice": 0, "table": 0}
KEY_FUNCTIONS = {"_decimal": 1, "array": 1}
# The [accounting] keys with a plain default value, shown in CONFIG.md's default column.
SCALAR_KEYS = (
    "interval_min",
    "grace_s",
    "gap_s",
    "power_gap_limit_s",
    "revision_days",
    "checkpoint_s",
    "offline_after",
    "grid_factor",
)
FLAG_MODULES: tuple[ModuleType, ...] = (
    gateway.accounting.energy,
    gateway.accounting.ledger,
    gateway.accounting.results,
    drivers.snapshot,
    drivers.pulse.counter,
)


def section(path: Path, heading: str) -> str:
    """The text under `heading` (a whole line) up to the next heading of the same or a higher level."""
    text = path.read_text(encoding="utf-8")
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading)  # ValueError: the heading is gone
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start + 1 : end])


def table_names(text: str) -> set[str]:
    """The `code` names in the first column of the markdown tables in `text`."""
    names: set[str] = set()
    for line in text.splitlines():
        match = re.match(r"\|([^|]*)\|", line)
        if match:
            names.update(re.findall(r"`([^`]+)`", match[1]))
    return names


# -- docs/CONFIG.md ---------------------------------------------------------------------


def parser_keys() -> set[str]:
    """Every key name the [accounting] parser asks a table for, read from settings.py's source."""
    tree = ast.parse(Path(gateway.accounting.settings.__file__).read_text(encoding="utf-8"))
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in KEY_METHODS:
            index = KEY_METHODS[func.attr]
        elif isinstance(func, ast.Name) and func.id in KEY_FUNCTIONS:
            index = KEY_FUNCTIONS[func.id]
        else:
            continue
        if len(node.args) > index:
            arg = node.args[index]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                keys.add(arg.value)
    return keys - {"accounting"}


def test_the_key_finder_finds_the_keys() -> None:
    keys = parser_keys()
    # A guard on the finder itself: if these are not found, the next test would prove nothing.
    known = {"grace_s", "meters", "limits", "factors", "role", "line_pressure_kpa"}
    assert known <= keys
    assert {"hysteresis", "for_s", "daily_budget_kwh", "green_certificates_kwh"} <= keys


def test_every_accounting_key_is_in_config_md() -> None:
    text = section(DOCS / "CONFIG.md", "## [accounting]")
    missing = sorted(
        key
        for key in parser_keys()
        if f"`{key}`" not in text and f"accounting.{key}" not in text and f"`{key}," not in text
    )
    assert not missing, f"docs/CONFIG.md [accounting] does not describe: {missing}"


def test_every_role_is_in_config_md() -> None:
    text = section(DOCS / "CONFIG.md", "### [[accounting.meters]]")
    row = next(line for line in text.splitlines() if line.startswith("| `role` |"))
    assert [role for role in ROLES if f"`{role}`" not in row] == []


def test_config_md_gives_the_real_defaults() -> None:
    rows = {}
    for line in section(DOCS / "CONFIG.md", "## [accounting]").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    defaults = AccountingConfig()
    for name in SCALAR_KEYS:
        value = getattr(defaults, name)
        shown = f"`{json.dumps(value)}`" if isinstance(value, str) else f"{value:g}"
        assert rows.get(name) == shown, f"{name}: docs say {rows.get(name)!r}, code has {shown}"


# -- docs/ACCOUNTING.md ---------------------------------------------------------------


def flag_constants() -> dict[str, str]:
    return {
        f"{module.__name__}.{name}": value
        for module in FLAG_MODULES
        for name, value in vars(module).items()
        if name.startswith("FLAG_") and isinstance(value, str)
    }


def test_every_flag_is_in_the_flags_table() -> None:
    constants = flag_constants()
    assert len(constants) >= 10  # the finder works: energy.py alone has six
    listed = table_names(section(DOCS / "ACCOUNTING.md", "## Data-quality flags"))
    missing = sorted(
        f"{where} = {flag!r}" for where, flag in constants.items() if flag not in listed
    )
    assert not missing, f"docs/ACCOUNTING.md flags table lacks: {missing}"


# -- docs/CONTRACT.md: real records -----------------------------------------------------


def example_config(tmp_path: Path) -> Config:
    """The example config as `cgw demo` runs it: with a trusted clock."""
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["gateway"]["data_dir"] = str(tmp_path)
    data["gateway"]["clock"] = "trusted"
    return parse(data, tmp_path / "gateway.toml")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, object]]]:
    """What the accounting publishes over 40 minutes of readings of the example's meters."""
    tmp_path = tmp_path_factory.mktemp("accounting")
    config = example_config(tmp_path)
    buffer = Buffer(tmp_path / "buffer.db", gateway=config.gateway_id, site=config.site)
    clock = ClockWatch(assume_synced=True)
    accounting = Accounting(config.accounting, config.timezone, buffer.db, clock)
    t0 = 1_793_499_300_000  # 2026-11-01 10:15 +08:00, on an interval boundary
    imported, exported, compressor, pv = 1000.0, 20.0, 50.0, 300.0
    out: dict[str, list[dict[str, object]]] = {INTERVALS: [], ALARMS: []}

    def checkpoint(wall_ms: int, db: sqlite3.Connection) -> Mapping[str, Sequence[bytes]]:
        return accounting.checkpoint(db, wall_ms)

    for step in range(0, 40 * 60, 10):
        ts = t0 + step * 1000
        imported, exported = imported + 0.01, exported + 0.001
        compressor, pv = compressor + 0.02, pv + 0.005
        power = 8000.0 if step < 600 else 6000.0  # over the 7.5 kW limit, then back under
        accounting.observe(
            [
                Snapshot(
                    "main-incomer",
                    ts,
                    "ok",
                    {
                        "active_energy_import_kwh": round(imported, 3),
                        "active_energy_export_kwh": round(exported, 3),
                    },
                ),
                Snapshot(
                    "compressor-1",
                    ts,
                    "ok",
                    {"active_energy_import_kwh": round(compressor, 3), "active_power_w": power},
                ),
                Snapshot("pv-inverter-ac", ts, "ok", {"active_energy_export_kwh": round(pv, 3)}),
            ]
        )
        if step % 60 == 0:
            assert buffer.commit_with(partial(checkpoint, ts))
    for stream, record in buffer.db.execute("SELECT stream, record FROM pending ORDER BY id"):
        out[stream].append(json.loads(record))
    buffer.close()
    return out


def first(records: list[dict[str, object]], kind: str) -> dict[str, object]:
    return next(r for r in records if r.get("kind") == kind)


def fields(record: dict[str, object], nested: tuple[str, ...]) -> Iterator[str]:
    """Top-level names, and `parent.child` for the objects named in `nested`."""
    for name, value in record.items():
        yield name
        if name in nested and isinstance(value, dict):
            yield from (f"{name}.{child}" for child in value)


def undocumented(names: Iterator[str], text: str) -> list[str]:
    documented = table_names(text)
    return sorted(name for name in names if name not in documented)


def test_every_field_of_a_real_meter_record_is_in_the_contract(
    published: dict[str, list[dict[str, object]]],
) -> None:
    meter = first(published[INTERVALS], "meter")
    text = section(DOCS / "CONTRACT.md", "## Interval records")
    assert undocumented(fields(meter, ("factors",)), text) == []


def test_every_field_of_a_real_site_record_is_in_the_contract(
    published: dict[str, list[dict[str, object]]],
) -> None:
    site = first(published[INTERVALS], "site")
    text = section(DOCS / "CONTRACT.md", "## Interval records")
    nested = ("electricity", "co2e", "energy", "completeness", "production")
    assert undocumented(fields(site, nested), text) == []


def test_every_field_of_a_real_alarm_record_is_in_the_contract(
    published: dict[str, list[dict[str, object]]],
) -> None:
    states = {(a["kind"], a["state"]) for a in published[ALARMS]}
    assert {("limit", "raised"), ("limit", "cleared")} <= states
    text = section(DOCS / "CONTRACT.md", "## Alarm records")
    for alarm in published[ALARMS]:
        assert undocumented(fields(alarm, ()), text) == []
        detail = alarm["detail"]
        assert isinstance(detail, dict)
        assert [name for name in detail if f"`{name}`" not in text] == [], alarm["alarm"]


def test_the_contract_examples_have_the_real_records_fields(
    published: dict[str, list[dict[str, object]]],
) -> None:
    text = section(DOCS / "CONTRACT.md", "## Interval records")
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    for kind in ("meter", "site"):
        real = first(published[INTERVALS], kind)
        shown = first(examples, kind)
        assert sorted(shown) == sorted(real), f"the {kind} example in docs/CONTRACT.md is stale"


def test_every_field_of_a_reading_record_is_in_the_contract() -> None:
    reading = Snapshot(
        "main-incomer",
        1_793_499_300_000,
        "out_of_range",
        {"voltage_l1_v": 9999.0},
        {"voltage_l1_v": "out_of_range"},
        error="example",
        clock_unsynced=True,
    ).record()
    text = section(DOCS / "CONTRACT.md", "## Reading records")
    assert undocumented(iter(reading), text) == []


def test_the_accounting_meta_and_status_are_in_the_contract(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    meta = accounting_meta(config)
    text = section(DOCS / "CONTRACT.md", "## meta payload")
    assert undocumented((f"accounting.{name}" for name in meta), text) == []
    buffer = Buffer(tmp_path / "buffer.db", gateway=config.gateway_id, site=config.site)
    clock = ClockWatch(assume_synced=True)
    status = Accounting(config.accounting, config.timezone, buffer.db, clock).status()
    buffer.close()
    text = section(DOCS / "CONTRACT.md", "## status payload")
    assert undocumented((f"accounting.{name}" for name in status), text) == []
