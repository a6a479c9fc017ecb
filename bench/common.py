"""What every benchmark shares: the machine description, the report table and JSON, child processes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: float | int | str
    unit: str = ""


@dataclass
class Report:
    """One benchmark's outcome: headline figures for the table, and details for the JSON only."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, label: str, value: float | int | str, unit: str = "") -> None:
        self.figures.append(Figure(key, label, value, unit))

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "machine": machine(),
            "figures": {f.key: {"value": f.value, "unit": f.unit} for f in self.figures},
            "details": self.details,
        }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "paho_mqtt": package_version("paho-mqtt"),
        "kernel": platform.release(),
    }


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def format_value(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render(report: Report) -> str:
    rows = [(f.label, format_value(f.value), f.unit) for f in report.figures]
    width = max((len(r[0]) for r in rows), default=0)
    value_width = max((len(r[1]) for r in rows), default=0)
    lines = [report.title, "-" * len(report.title)]
    lines += [
        f"  {label:<{width}}  {value:>{value_width}}  {unit}".rstrip()
        for label, value, unit in rows
    ]
    return "\n".join(lines)


def write_results(report: Report, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{report.name}-{stamp}.json"
    text = json.dumps(report.as_dict(), indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    (directory / f"{report.name}-latest.json").write_text(text, encoding="utf-8")
    return path


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else float("nan")


def written_bytes() -> int:
    """Bytes this process has handed to write(2) so far (`wchar` in /proc/self/io), or -1."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/io").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(":")
            if key == "wchar":
                return int(value)
    return -1


class Deadline:
    """A time budget; `check` raises TimeoutError with `what` once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"gave up after {self.seconds:.0f} s: {what}")


class Children:
    """Child processes that are stopped (TERM, then KILL) when the block is left, however it is left."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, **kwargs)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            self.stop(process)


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so `finally` blocks stop the children either way."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def python() -> str:
    return sys.executable
