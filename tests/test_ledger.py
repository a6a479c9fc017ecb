"""The ledger as the daemon drives it: revisions on late data, checkpoints across a crash."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer.store import Buffer
from drivers.snapshot import Snapshot
from gateway.accounting.service import MAX_HELD_S, Accounting
from gateway.clock import ClockWatch
from gateway.config import Config, parse

START = 1_793_462_400_000  # 2026-11-01T00:00:00+08:00
MINUTE = 60_000
CONFIG = """
[gateway]
id = "gw"
site = "s"
timezone = "Asia/Shanghai"
clock = "trusted"
[mqtt]
enabled = false
[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
[[devices]]
id = "m"
bus = "lan"
unit = 1
profile = "eastron_sdm630"
interval_s = 60
[accounting]
grace_s = 60
[[accounting.meters]]
device = "m"
role = "grid_import"
"""


def config(tmp_path: Path) -> Config:
    return parse(tomllib.loads(CONFIG), tmp_path / "gateway.toml")


class Site:
    """An Accounting on a real buffer, checkpointed like the daemon does it."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = config(tmp_path)
        self.buffer = Buffer(tmp_path / "buffer.db", gateway="gw", site="s")
        self.accounting = Accounting(
            self.config.accounting,
            self.config.timezone,
            self.buffer.db,
            ClockWatch(assume_synced=True),
        )

    def read(self, ts_ms: int, kwh: float) -> None:
        self.accounting.observe([Snapshot("m", ts_ms, "ok", {"active_energy_import_kwh": kwh})])

    def checkpoint(self, wall_ms: int) -> None:
        assert self.buffer.commit_with(lambda db: self.accounting.checkpoint(db, wall_ms))

    def results(self) -> Iterator[dict[str, object]]:
        for stream, record in self.buffer.db.execute(
            "SELECT stream, record FROM pending ORDER BY id"
        ):
            if stream == "intervals":
                yield json.loads(record)


def meter_results(site: Site, period: str) -> list[dict[str, object]]:
    return [r for r in site.results() if r["kind"] == "meter" and r["period"] == period]


def test_a_late_reading_revises_the_published_interval(tmp_path: Path) -> None:
    site = Site(tmp_path)
    for minute in range(15):
        site.read(START + minute * MINUTE, 100 + minute * 0.25)
    site.checkpoint(START + 17 * MINUTE)  # 00:00-00:15 closed (grace 60 s)
    first = meter_results(site, "interval")
    assert [(r["start_ms"], r["revision"], r["energy"]) for r in first] == [(START, 0, 3.5)]
    # The reading at 00:15 arrives late; the energy of 00:14-00:15 belongs to the closed interval.
    site.read(START + 15 * MINUTE, 103.75)
    site.checkpoint(START + 18 * MINUTE)
    revised = meter_results(site, "interval")[1:]
    assert [(r["start_ms"], r["revision"], r["energy"]) for r in revised] == [(START, 1, 3.75)]


def test_unchanged_results_are_not_published_twice(tmp_path: Path) -> None:
    site = Site(tmp_path)
    for minute in range(16):
        site.read(START + minute * MINUTE, 100 + minute * 0.25)
    site.checkpoint(START + 17 * MINUTE)
    site.checkpoint(START + 18 * MINUTE)
    assert len(meter_results(site, "interval")) == 1


@settings(max_examples=25, deadline=None)
@given(
    crash_after=st.integers(1, 118),
    checkpoints=st.sets(st.integers(1, 118), max_size=6),
)
def test_a_crash_between_checkpoints_loses_no_energy(
    tmp_path_factory: pytest.TempPathFactory, crash_after: int, checkpoints: set[int]
) -> None:
    """The daemon is killed after `crash_after` readings (unsaved work since the last
    checkpoint lost) and restarted from the database: the day still holds every Wh."""
    tmp_path = tmp_path_factory.mktemp("crash")
    counter = [Decimal(100) + Decimal("0.125") * i for i in range(120)]
    site = Site(tmp_path)
    for i in range(crash_after):
        site.read(START + i * MINUTE, float(counter[i]))
        # As the daemon: when the ledger asks (its first reading, a closed interval), and
        # every checkpoint_s in between.
        if i in checkpoints or site.accounting.checkpoint_due(-math.inf, START + i * MINUTE):
            site.checkpoint(START + i * MINUTE)
    site.buffer.close()  # no final checkpoint: a SIGKILL
    site = Site(tmp_path)
    for i in range(crash_after, 120):
        site.read(START + i * MINUTE, float(counter[i]))
    site.checkpoint(START + 2 * 86_400_000)  # the day and the month have closed
    days = [r for r in meter_results(site, "day")]
    assert Decimal(repr(days[-1]["energy"])) == counter[-1] - counter[0]


def test_an_offline_alarm_from_before_a_restart_clears_at_the_next_answer(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.read(START, 100.0)
    for i in range(1, 4):  # offline_after = 3 failed polls
        site.accounting.observe([Snapshot("m", START + i * MINUTE, "timeout", error="no answer")])
    site.checkpoint(START + 4 * MINUTE)
    assert [e.id for e in site.accounting.alarms.active()] == ["offline:m"]
    site.buffer.close()
    site = Site(tmp_path)  # restarted: the alarm comes back from the saved state
    assert [e.id for e in site.accounting.alarms.active()] == ["offline:m"]
    site.read(START + 5 * MINUTE, 101.0)
    assert site.accounting.alarms.active() == []


class NeverSynced:
    """A kernel that never says synchronised (an isolated site without NTP)."""

    def __call__(self) -> bool:
        return False


def test_a_clock_that_never_synchronises_still_gets_its_intervals_after_the_wait(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    buffer = Buffer(tmp_path / "buffer.db", gateway="gw", site="s")
    accounting = Accounting(
        cfg.accounting, cfg.timezone, buffer.db, ClockWatch(synced=NeverSynced())
    )
    batch = [Snapshot("m", START, "ok", {"active_energy_import_kwh": 100.0})]
    accounting.observe(batch)
    assert batch[0].clock_unsynced and accounting.held is not None
    assert not accounting.checkpoint_due(-math.inf, START + 20 * MINUTE)  # held: nothing closes
    accounting.held.since_mono -= MAX_HELD_S + 1  # six hours later
    accounting.observe(
        [Snapshot("m", START + 15 * MINUTE, "ok", {"active_energy_import_kwh": 101.0})]
    )
    later = Snapshot("m", START + 16 * MINUTE, "ok", {"active_energy_import_kwh": 101.5})
    accounting.observe([later])
    assert later.clock_unsynced and accounting.held is None  # flagged, but accounted
    assert buffer.commit_with(lambda db: accounting.checkpoint(db, START + 18 * MINUTE))
    records = [json.loads(r) for (r,) in buffer.db.execute("SELECT record FROM pending")]
    first = next(r for r in records if r["kind"] == "meter" and r["period"] == "interval")
    assert first["energy"] == 1 and "clock_unsynced" in first["flags"]
    assert not accounting.checkpoint_due(-math.inf, START + 18 * MINUTE)  # no checkpoint storm
