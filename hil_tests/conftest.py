"""Short versions by default (inside `./dev test`); `CGW_HIL_LONG=1` (or `./dev hil --long`) runs
the long ones. Each scenario records its figures for docs/RELIABILITY.md (`python -m
hil_tests.report`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RESULTS = Path(os.environ.get("CGW_HIL_RESULTS") or Path(__file__).resolve().parent / "results")
LONG = os.environ.get("CGW_HIL_LONG") == "1"


def size(short: int, long: int) -> int:
    return long if LONG else short


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long runs outlast the suite's per-test timeout (pyproject.toml): give them hours."""
    if LONG:
        for item in items:
            item.add_marker(pytest.mark.timeout(3 * 3600))


@pytest.fixture
def record() -> Callable[..., None]:
    """Save a scenario's figures (for the report), keyed by the test's name."""

    def save(name: str, **figures: Any) -> None:
        RESULTS.mkdir(exist_ok=True)
        mode = "long" if LONG else "short"
        (RESULTS / f"{name}.{mode}.json").write_text(
            json.dumps({"scenario": name, "mode": mode, **figures}, indent=1, sort_keys=True)
        )

    return save


# The real parts the scenarios share with the test suite: Mosquitto, emulated meters, and the
# guard that kills a daemon a failed scenario left running.
from tests.conftest import broker, emulator, meters, no_daemon_outlives_its_test  # noqa: E402

__all__ = ["broker", "emulator", "meters", "no_daemon_outlives_its_test", "record", "size"]
