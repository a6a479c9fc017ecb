"""What the commissioning page shows, kept current by the daemon's main thread and read by the web
server's threads: a slow browser reads a finished view, it never waits on polling or buffering.

The main thread's cost per reading is one dict assignment (`observe`); the rest (warnings, site
power, today's energy) is worked out at most every `PUBLISH_EVERY_S` in `publish`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from drivers.snapshot import OK, OUT_OF_RANGE, Snapshot
from drivers.vocabulary import vocabulary
from gateway.config import Config
from gateway.tools.check import OK as FINE
from gateway.tools.check import Finding, Limits, judge_values

HISTORY_EVERY_S = 10.0
HISTORY_POINTS = 6 * 360  # six hours of site power at one point per 10 s
COUNTER_WINDOW_S = 10.0  # readings this far apart judge counters, as `cgw check` does
ENERGY = "active_energy_import_kwh"
POWER = "active_power_w"
ANSWERED = (OK, OUT_OF_RANGE)


class LiveState:
    def __init__(self, config: Config, limits: Limits | None = None) -> None:
        self.config = config
        self.limits = limits or Limits.nominal(230.0, 50.0)
        self.zone = ZoneInfo(config.timezone)
        accounted = {m.device: m.role for m in config.accounting.meters}
        # The site's power: its grid meters when accounting says which, else every meter.
        grid = [d for d, role in accounted.items() if role == "grid_import"]
        self.site_meters = grid or [d.id for d in config.devices]
        self.units = vocabulary()
        self.latest: dict[str, Snapshot] = {}  # written by the main thread only
        self._earlier: dict[str, Snapshot] = {}
        self._day: str | None = None
        self._day_start: dict[str, float] = {}  # import counter at the day's first reading
        self._history: deque[tuple[int, float]] = deque(maxlen=HISTORY_POINTS)
        self._next_history = 0.0
        self._lock = threading.Lock()
        self._view: dict[str, Any] = {"gateway": {}, "devices": [], "history": []}

    # -- the main thread -------------------------------------------------------------------

    def observe(self, snapshot: Snapshot) -> None:
        self.latest[snapshot.device] = snapshot

    def publish(self, status: Mapping[str, Any], now: float | None = None) -> None:
        """Build the page's view from the latest readings and the daemon's status."""
        now = time.monotonic() if now is None else now
        devices = [self._device(d.id, status) for d in self.config.devices]
        devices += [self._device(p.id, status) for p in self.config.pulse_inputs]
        if now >= self._next_history:
            self._next_history = now + HISTORY_EVERY_S
            self._sample_site_power()
        view = {
            "gateway": self._gateway(status),
            "devices": devices,
            "buses": status.get("buses", {}),
            "site": {"today_kwh": self._site_today(devices), "power_meters": self.site_meters},
            "history": list(self._history),
        }
        with self._lock:
            self._view = view

    def _device(self, device_id: str, status: Mapping[str, Any]) -> dict[str, Any]:
        health = dict(status.get("devices", {}).get(device_id, {}))
        latest = self.latest.get(device_id)
        answered = latest is not None and latest.quality in ANSWERED
        warnings: list[Finding] = []
        if latest is not None and answered:
            earlier = self._earlier.get(device_id)
            if earlier is None or latest.ts_ms - earlier.ts_ms >= 2 * COUNTER_WINDOW_S * 1000:
                self._earlier[device_id] = earlier = latest
            seconds = max((latest.ts_ms - earlier.ts_ms) / 1000, 0.001)
            counters = earlier is not latest and seconds >= COUNTER_WINDOW_S
            findings = judge_values(
                device_id, earlier if counters else latest, latest, seconds, self.limits
            )
            warnings = [f for f in findings if f.status != FINE and (counters or f.check != ENERGY)]
            self._count_today(device_id, latest)
        return {
            "id": device_id,
            "answering": answered,
            "quality": latest.quality if latest else None,
            "error": latest.error if latest else health.get("last_error"),
            "ts": latest.ts_ms if latest else None,
            "values": dict(latest.values) if latest else {},
            "units": {q: self.units[q].unit for q in latest.values if q in self.units}
            if latest
            else {},
            "latency_ms": health.get("last_latency_ms"),
            "polls": health.get("polls", 0),
            "failures": health.get("failures", 0),
            "late_polls": health.get("late_polls", 0),
            "backed_off_s": health.get("backed_off_s", 0.0),
            **self._today(device_id, latest, status),
            "warnings": [
                {"status": f.status, "check": f.check, "detail": f.detail} for f in warnings
            ],
        }

    def _count_today(self, device_id: str, latest: Snapshot) -> None:
        day = datetime.fromtimestamp(latest.ts_ms / 1000, self.zone).date().isoformat()
        if day != self._day:
            self._day, self._day_start = day, {}
        if ENERGY in latest.values:
            self._day_start.setdefault(device_id, latest.values[ENERGY])

    def _today(
        self, device_id: str, latest: Snapshot | None, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """kWh today: the accounting's (to its last closed interval) where the device is
        accounted, else its import counter's rise since the first reading seen today."""
        today = (status.get("accounting") or {}).get("today") or {}
        if device_id in today.get("kwh", {}):
            return {"today_kwh": today["kwh"][device_id], "today_to_ms": today.get("to_ms")}
        start = self._day_start.get(device_id)
        if latest is None or start is None or ENERGY not in latest.values:
            return {"today_kwh": None, "today_to_ms": None}
        return {"today_kwh": round(max(0.0, latest.values[ENERGY] - start), 3), "today_to_ms": None}

    def _site_today(self, devices: list[dict[str, Any]]) -> float | None:
        values = [d["today_kwh"] for d in devices if d["id"] in self.site_meters]
        known = [v for v in values if v is not None]
        return round(sum(known), 3) if known else None

    def _sample_site_power(self) -> None:
        readings = [self.latest.get(d) for d in self.site_meters]
        powers = [r.values[POWER] for r in readings if r is not None and POWER in r.values]
        if powers:
            ts = max(r.ts_ms for r in readings if r is not None)
            self._history.append((ts, round(sum(powers), 1)))

    def _gateway(self, status: Mapping[str, Any]) -> dict[str, Any]:
        uplink = status.get("uplink") or {}
        return {
            "id": self.config.gateway_id,
            "site": self.config.site,
            "software": status.get("software"),
            "clock_synced": status.get("clock_synced"),
            "uplink": {
                "enabled": bool(status.get("uplink")),
                "connected": uplink.get("connected"),
                "last_publish_ms": uplink.get("last_publish_ms"),
                "last_error": uplink.get("last_error"),
            },
            "backlog_records": status.get("backlog_records"),
            "oldest_undelivered_age_s": status.get("oldest_undelivered_age_s"),
            "disk": status.get("disk"),
            "dropped_records": status.get("dropped_records"),
        }

    # -- the web threads -------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        with self._lock:
            return self._view
