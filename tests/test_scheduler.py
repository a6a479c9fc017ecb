"""The bus scheduler: cadence without drift, adaptive timeouts, backoff of dead meters, the
Modbus silent interval, and a bus that cannot keep up is reported."""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.emulation.meter import EmulatedMeter, Reply
from drivers.emulation.server import EmulatorServer
from drivers.modbus import ModbusBus
from drivers.profile import load_shipped_profile
from drivers.snapshot import NO_CONNECTION, Snapshot
from gateway.config import Bus, Device, SerialBus, TcpBus
from gateway.poller import BusPoller
from tests.support.serial_pair import serial_pair

SDM630 = load_shipped_profile("eastron_sdm630")


def device(name: str, unit: int, interval_s: float) -> Device:
    return Device(name, "bus", unit, SDM630, interval_s=interval_s, quantities=("voltage_l1_v",))


def run(bus: Bus, devices: list[Device], seconds: float) -> tuple[BusPoller, list[Snapshot]]:
    sink: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
    poller = BusPoller(bus, devices, sink)
    poller.start()
    time.sleep(seconds)
    poller.stop()
    poller.join(5)
    out = []
    while not sink.empty():
        out.append(sink.get())
    return poller, out


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    meters = [EmulatedMeter(unit, SDM630, seed=unit) for unit in (1, 2, 3, 4)]
    emulator = EmulatorServer(meters)
    yield emulator
    emulator.stop()


def test_cadence_holds_without_drift(server: EmulatorServer) -> None:
    bus = TcpBus("bus", "127.0.0.1", server.serve_tcp(), timeout_s=0.5)
    poller, snapshots = run(bus, [device("a", 1, 0.1), device("b", 2, 0.25)], 3.0)
    stamps = [s.ts_ms for s in snapshots if s.device == "a"]
    assert 28 <= len(stamps) <= 31
    # no drift: the n-th poll happens n intervals after the first, within a few ms
    drift = (stamps[-1] - stamps[0]) - (len(stamps) - 1) * 100
    assert abs(drift) < 30, f"cadence drifted by {drift} ms"
    assert 11 <= sum(s.device == "b" for s in snapshots) <= 13
    assert poller.bus_health.keeps_up and poller.health["a"].late_polls == 0


def test_timeouts_adapt_to_a_meters_latency(server: EmulatorServer) -> None:
    bus = TcpBus("bus", "127.0.0.1", server.serve_tcp(), timeout_s=2.0)
    sink: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
    poller = BusPoller(bus, [device("a", 1, 0.05)], sink)
    poller.start()
    time.sleep(1.0)
    learned = poller.health["a"].timeout_ms
    assert learned is not None and learned < 200, "a fast meter keeps the 2 s bus timeout"
    server.meters[1].fault = "silent"
    time.sleep(0.6)
    poller.stop()
    poller.join(5)
    failed = poller.health["a"]
    assert failed.failures >= 1
    assert failed.last_latency_ms is not None and failed.last_latency_ms < 300  # not 2000


def test_a_dead_meter_is_backed_off_and_costs_the_bus_little(server: EmulatorServer) -> None:
    server.meters[3].fault = "silent"
    bus = TcpBus(
        "bus", "127.0.0.1", server.serve_tcp(), timeout_s=0.3, backoff_after=3, backoff_max_s=1.0
    )
    poller, snapshots = run(bus, [device("alive", 1, 0.1), device("dead", 3, 0.1)], 4.0)
    dead = [s for s in snapshots if s.device == "dead"]
    alive = [s for s in snapshots if s.device == "alive"]
    # 3 polls before backing off, then 0.2, 0.4, 0.8, 1.0, 1.0 ... s apart: about 7 in 4 s
    assert 5 <= len(dead) <= 9, len(dead)
    assert poller.health["dead"].backed_off_s == 1.0
    # the dead meter cost at most one timeout per poll; the live one had the rest of the bus
    dead_cost = len(dead) * bus.timeout_s
    assert len(alive) >= (4.0 - dead_cost) / 0.1 * 0.8
    assert all(s.quality == "ok" for s in alive)


def test_the_silent_interval_separates_frames_on_a_serial_line() -> None:
    arrivals: list[float] = []

    class Recording(EmulatedMeter):
        def respond(self, pdu: bytes) -> Reply:
            arrivals.append(time.monotonic())
            return super().respond(pdu)

    with serial_pair() as line:
        server = EmulatorServer([Recording(1, SDM630)])
        server.serve_serial(str(line.a), baudrate=1200)
        try:
            bus = SerialBus("bus", str(line.b), baudrate=1200, timeout_s=0.5)
            assert bus.silent_interval_s == pytest.approx(3.5 * 10 / 1200)
            reader = ModbusBus(bus)
            full = Device("m", "bus", 1, SDM630)  # three requests per read (two holes > 7)
            for _ in range(3):
                assert reader.read(full).quality == "ok"
            reader.close()
        finally:
            server.stop()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 6 and min(gaps) >= bus.silent_interval_s * 0.95


def test_a_bus_that_cannot_keep_up_says_so(server: EmulatorServer) -> None:
    for unit in (1, 2, 3):
        server.meters[unit].fault = "slow"
        server.meters[unit].slow_delay_s = 0.12
    bus = TcpBus("bus", "127.0.0.1", server.serve_tcp(), timeout_s=1.0)
    poller, _ = run(bus, [device(f"m{u}", u, 0.2) for u in (1, 2, 3)], 3.0)
    assert not poller.bus_health.keeps_up and poller.bus_health.demand > 1.0
    assert sum(h.late_polls for h in poller.health.values()) > 0


def test_rs485_mode_on_a_port_without_it_is_a_clear_error(tmp_path: Path) -> None:
    with serial_pair() as line:
        reader = ModbusBus(SerialBus("bus", str(line.b), rs485=True))
        snapshot = reader.read(device("m", 1, 1))
        reader.close()
    assert snapshot.quality == NO_CONNECTION
    assert "RS-485 mode" in (snapshot.error or "")
