"""What a fleet operator reads in the retained status message besides the buffer's figures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

THERMAL = Path("/sys/class/thermal")
CPU_ZONE_TYPES = ("cpu-thermal", "x86_pkg_temp", "soc_thermal")


def cpu_temperature_c(thermal: Path = THERMAL) -> float | None:
    """The CPU's temperature where the board exposes it (a Pi: zone `cpu-thermal`), else None."""
    zones = sorted(thermal.glob("thermal_zone*"))
    by_type: dict[str, Path] = {}
    for zone in zones:
        with contextlib.suppress(OSError):
            by_type.setdefault((zone / "type").read_text().strip(), zone)
    chosen = next((by_type[t] for t in CPU_ZONE_TYPES if t in by_type), zones[0] if zones else None)
    if chosen is None:
        return None
    try:
        return round(int((chosen / "temp").read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def bus_error_rates(
    buses: Mapping[str, Iterable[str]], devices: Mapping[str, Mapping[str, object]]
) -> dict[str, dict[str, object]]:
    """Per bus: polls, failed polls and their share, summed over the bus's devices."""
    rates: dict[str, dict[str, object]] = {}
    for bus, device_ids in buses.items():
        polls = failures = 0
        for device_id in device_ids:
            health = devices.get(device_id, {})
            polls += int(health.get("polls", 0))  # type: ignore[call-overload]
            failures += int(health.get("failures", 0))  # type: ignore[call-overload]
        rates[bus] = {
            "polls": polls,
            "failures": failures,
            "error_rate": round(failures / polls, 4) if polls else None,
        }
    return rates
