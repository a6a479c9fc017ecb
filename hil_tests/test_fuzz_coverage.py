"""Coverage-guided fuzzing (atheris, hil_tests/coverage_fuzz.py) of the DL/T 645 frame scanner and
reply checks, the envelope verifier, the command checker and the config loader: no finding (an
escaped exception or a failed oracle) in the runs below; libFuzzer's coverage and corpus as
figures. Seeded (-seed=1), so a finding repeats."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hil_tests.conftest import size

# Coverage-guided inputs grow long (libFuzzer lengthens them as coverage allows): the DL/T 645
# scanner's inputs slow to about 1,500/s. These counts take about 4 minutes in all here.
RUNS = {
    "dlt645": size(20_000, 200_000),
    "verifier": size(20_000, 1_000_000),
    "command": size(20_000, 1_000_000),
    "config": size(5_000, 200_000),
}


@pytest.mark.parametrize("target", list(RUNS))
def test_coverage_guided_fuzzing_finds_nothing(
    target: str, tmp_path: Path, record: Callable[..., None]
) -> None:
    assert importlib.util.find_spec("atheris"), "atheris is missing: ./dev test installs it"
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable, "-m", "hil_tests.coverage_fuzz", target, str(tmp_path),
            f"-runs={RUNS[target]}", "-seed=1", "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert run.returncode == 0 and not crashes, run.stderr[-4000:]
    done = re.search(r"DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", run.stderr)
    executed = re.search(r"stat::number_of_executed_units: (\d+)", run.stderr)
    assert done and executed and int(executed.group(1)) >= RUNS[target]
    record(
        f"fuzz_coverage_{target}",
        inputs=int(executed.group(1)),
        edges_covered=int(done.group(1)),
        features=int(done.group(2)),
        corpus=int(done.group(3)),
        findings=len(crashes),
        seconds=round(seconds),
    )
