"""Realistic readings: Eastron SDM630 snapshots whose values went through the real register codec,
and sealed backlogs of them.

Values come from the emulated meters' load model, encoded into float32 registers and decoded by
`drivers.codec.decode`, so they have exactly the digits a real poll produces (230.07124, 0, ...).
"""

from __future__ import annotations

from collections.abc import Iterator

from bench.common import Deadline
from buffer.canonical import canonical
from buffer.keys import load_or_create
from drivers.codec import decode
from drivers.emulation.meter import EmulatedMeter
from drivers.profile import load_shipped_profile
from drivers.snapshot import OK, Snapshot
from gateway.config import Config
from gateway.daemon import open_buffer
from gateway.uplink import now_ms

PROFILE = "eastron_sdm630"
START_S = 1_732_233_600.0  # 2024-11-22T00:00:00Z
SEAL_EVERY = 5000  # records committed, then sealed, at a time while preparing a backlog


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def value_pool(meters: int = 50, polls: int = 40) -> list[dict[str, float]]:
    """`meters` x `polls` distinct value sets, one poll per second of emulated time."""
    profile = load_shipped_profile(PROFILE)
    clock = Clock(START_S)
    emulated = [EmulatedMeter(unit, profile, seed=7, clock=clock) for unit in range(1, meters + 1)]
    pool = []
    for _ in range(polls):
        clock.now += 1.0
        for meter in emulated:
            values: dict[str, float] = {}
            for register in profile.registers:
                words = meter.registers(register.function, register.address, register.words)
                value = decode(register, words)
                if value is not None:
                    values[register.quantity] = value
            pool.append(values)
    return pool


def snapshots(count: int, meters: int = 50) -> list[Snapshot]:
    """`count` snapshots of `meters` meters polled once a second, cycling through a value pool."""
    pool = value_pool(meters)
    start_ms = int(START_S * 1000)
    return [
        Snapshot(
            device=f"meter-{i % meters + 1:02d}",
            ts_ms=start_ms + (i // meters) * 1000 + 37 * (i % meters),
            quality=OK,
            values=pool[i % len(pool)],
        )
        for i in range(count)
    ]


def record_bytes(count: int, distinct: int = 10_000) -> Iterator[bytes]:
    """`count` canonical records (a pool of `distinct` ones, repeated) for backlogs."""
    pool = [canonical(s.record()) for s in snapshots(min(count, distinct))]
    for i in range(count):
        yield pool[i % len(pool)]


def prepare_backlog(config: Config, records: int, deadline: Deadline) -> tuple[int, int]:
    """Commit and seal `records` readings; returns (envelopes, database bytes)."""
    signer, _ = load_or_create(config.signing_key)
    buffer = open_buffer(config)
    batch: list[bytes] = []
    for record in record_bytes(records):
        batch.append(record)
        if len(batch) == SEAL_EVERY:
            deadline.check("preparing the backlog")
            buffer.commit("readings", batch)
            buffer.seal_pending(signer, now_ms())
            batch = []
    buffer.commit("readings", batch)
    buffer.seal_pending(signer, now_ms())
    envelopes = buffer.stats().backlog_envelopes
    buffer.close()  # checkpoints the WAL into the database file
    return envelopes, (config.data_dir / "buffer.db").stat().st_size
