"""Bus: 10 SDM630s and 10 DTSU666s polled on one baud-accurate emulated RS-485 line at 9600 baud.

Product path: `ModbusBus.read` of each device's coalesced plan (drivers/plan.py), one device after
the other, as BusPoller does. Baseline in the same run: one request per quantity (each register
planned alone). Transactions are counted by the emulated meters; the minimum is the number of
requests in the coalesced plan. Bus time is measured around the reads and compared with the sum
of the plan's wire-time minima (FACTS.md 6). Then one dead (silent) meter is added: the bus time it
costs per cycle with the bus timeout (ModbusBus directly) and under BusPoller's adaptive timeout
and backoff.

Timing is 8E1's: 11-bit characters. The line is opened as 8N2, the same 11 bits, because some
kernels' ptys refuse parity settings (tcsetattr with PARENB fails with EINVAL).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import queue
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pymodbus.client import ModbusSerialClient

from bench.common import Report, machine, ratio, render, write_results
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer, LineTiming
from drivers.modbus import ModbusBus
from drivers.plan import plan_profile
from drivers.profile import Profile, load_shipped_profile
from drivers.snapshot import Snapshot
from gateway.config import AnyDevice, Device, SerialBus
from gateway.poller import BusPoller

BAUDRATE = 9600
PARITY, STOPBITS = "N", 2  # 11-bit characters, as 8E1
TIMING = LineTiming.of(BAUDRATE, PARITY, STOPBITS)
TARGET_RATIO = 1.10
BUS_TIMEOUT_S = 0.5  # SerialBus's default
DEAD_UNIT = 21
POLL_INTERVAL_S = 5.0
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class Sizes:
    cycles: int
    baseline_cycles: int
    dead_cycles: int
    poller_s: float


FULL = Sizes(cycles=10, baseline_cycles=4, dead_cycles=4, poller_s=120.0)
QUICK = Sizes(cycles=3, baseline_cycles=1, dead_cycles=2, poller_s=40.0)


@dataclass(frozen=True)
class Cycles:
    """Back-to-back poll cycles: bus time and transactions per cycle."""

    seconds: list[float]
    transactions: list[int]
    failed_reads: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def fleet() -> list[EmulatedMeter]:
    sdm630 = load_shipped_profile("eastron_sdm630")
    dtsu666 = load_shipped_profile("chint_dtsu666")
    meters = [EmulatedMeter(unit, sdm630, seed=1) for unit in range(1, 11)]
    meters += [EmulatedMeter(unit, dtsu666, seed=1) for unit in range(11, 21)]
    meters.append(EmulatedMeter(DEAD_UNIT, sdm630, seed=1, fault="silent"))
    return meters


def device(meter: EmulatedMeter, quantities: tuple[str, ...] | None = None) -> Device:
    name = f"unit{meter.unit}" + (f"-{quantities[0]}" if quantities else "")
    return Device(name, "rs485", meter.unit, meter.profile, POLL_INTERVAL_S, quantities)


def one_per_quantity(meter: EmulatedMeter) -> list[Device]:
    """The baseline: a device per register, so that each quantity is its own request."""
    return [device(meter, (register.quantity,)) for register in meter.profile.registers]


def wire_minimum_s(profile: Profile, quantities: tuple[str, ...] | None = None) -> float:
    return sum(TIMING.read_transaction_s(r.count) for r in plan_profile(profile, quantities))


def requests_served(meters: Sequence[EmulatedMeter]) -> int:
    return sum(meter.requests for meter in meters)


def poll_cycles(
    reader: ModbusBus, devices: Sequence[Device], meters: Sequence[EmulatedMeter], cycles: int
) -> Cycles:
    seconds, transactions, failed = [], [], 0
    for _ in range(cycles):
        served = requests_served(meters)
        started = time.monotonic()
        for each in devices:
            failed += reader.read(each).quality != "ok"
        seconds.append(time.monotonic() - started)
        transactions.append(requests_served(meters) - served)
    return Cycles(seconds, transactions, failed)


def poll_every_character(reader: ModbusBus) -> float:
    """An experiment, not the product: make pymodbus look for new bytes every character time
    instead of every 4 (a private attribute of its serial client). Returns the old interval."""
    client = reader._client
    assert isinstance(client, ModbusSerialClient)
    old = float(client._recv_interval)
    client._recv_interval = TIMING.character_s
    return old


def poller_dead_meter(
    port: str, devices: list[AnyDevice], dead: EmulatedMeter, seconds: float
) -> dict[str, float]:
    """BusPoller on the fleet; the dead meter answers for a while (its latency is learned), then
    goes silent. Its bus time while dead is its polls counted by the poller times the bus time of
    its last poll (every dead poll waits out the same adaptive timeout)."""
    bus = SerialBus(
        "rs485",
        port,
        baudrate=BAUDRATE,
        parity=PARITY,
        stopbits=STOPBITS,
        timeout_s=BUS_TIMEOUT_S,
        backoff_max_s=BACKOFF_MAX_S,
    )
    dead.fault = None
    sink: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
    poller = BusPoller(bus, devices, sink)
    health = poller.health[devices[-1].id]
    poller.start()
    try:
        time.sleep(2 * POLL_INTERVAL_S)  # every device answers twice: latencies are learned
        polls_alive = health.polls
        latency_alive_ms = health.last_latency_ms or 0.0
        died = time.monotonic()
        dead.fault = "silent"
        time.sleep(seconds)
        dead_for = time.monotonic() - died
        polls_dead = health.polls - polls_alive
        poll_ms = health.last_latency_ms or 0.0
    finally:
        poller.stop()
        poller.join(BUS_TIMEOUT_S * 4)
        dead.fault = "silent"
    return {
        "dead_for_s": round(dead_for, 1),
        "latency_alive_ms": latency_alive_ms,
        "polls_while_dead": polls_dead,
        "bus_time_per_dead_poll_ms": poll_ms,
        "lost_per_interval_ms": polls_dead * poll_ms / (dead_for / POLL_INTERVAL_S),
        "adaptive_timeout_ms": health.timeout_ms or 0.0,
        "backed_off_s": health.backed_off_s,
        "bus_demand": poller.bus_health.demand,
    }


def run(sizes: Sizes) -> Report:
    meters = fleet()
    alive, dead = meters[:-1], meters[-1]
    coalesced_devices = [device(m) for m in alive]
    baseline_devices = [d for m in alive for d in one_per_quantity(m)]
    minimum_transactions = sum(len(plan_profile(m.profile)) for m in alive)
    minimum_s = sum(wire_minimum_s(m.profile) for m in alive)
    baseline_minimum_s = sum(wire_minimum_s(d.profile, d.quantities) for d in baseline_devices)
    report = Report(
        "bus",
        f"bus: 10 SDM630 + 10 DTSU666 on one baud-accurate line, {BAUDRATE} baud, 11-bit characters",
    )
    with EmulatorServer(meters) as server:
        port = server.start_pty(None, BAUDRATE, PARITY, STOPBITS, baud_accurate=True)
        line = SerialBus(
            "rs485",
            port,
            baudrate=BAUDRATE,
            parity=PARITY,
            stopbits=STOPBITS,
            timeout_s=BUS_TIMEOUT_S,
        )
        reader = ModbusBus(line)
        try:
            poll_cycles(reader, coalesced_devices, alive, 1)  # opens the port; not counted
            coalesced = poll_cycles(reader, coalesced_devices, alive, sizes.cycles)
            baseline = poll_cycles(reader, baseline_devices, alive, sizes.baseline_cycles)
            with_dead = poll_cycles(
                reader, [*coalesced_devices, device(dead)], meters, sizes.dead_cycles
            )
            pymodbus_poll_s = poll_every_character(reader)
            faster_polling = poll_cycles(reader, coalesced_devices, alive, sizes.dead_cycles)
        finally:
            reader.close()
        poller = poller_dead_meter(port, [*coalesced_devices, device(dead)], dead, sizes.poller_s)
        if server.failures:
            raise RuntimeError(f"emulator failed: {server.failures[0]}")
    if coalesced.failed_reads or baseline.failed_reads:
        raise RuntimeError("reads failed on the live meters: the figures would mean nothing")

    transactions = statistics.median(coalesced.transactions)
    overhead_s = (coalesced.median_s - minimum_s) / transactions
    report.add("transactions", "Modbus transactions per cycle (coalesced)", int(transactions))
    report.add(
        "transactions_min", "  minimum (requests in the coalesced plan)", minimum_transactions
    )
    report.add(
        "cycle_s", "bus time per cycle (coalesced, median)", round(coalesced.median_s, 3), "s"
    )
    report.add("cycle_min_s", "  wire minimum of the coalesced plan", round(minimum_s, 3), "s")
    report.add(
        "cycle_ratio",
        f"  measured / wire minimum (target <= {TARGET_RATIO:.2f})",
        round(ratio(coalesced.median_s, minimum_s), 3),
    )
    report.add(
        "overhead_per_transaction_ms",
        "  driver time per transaction above the wire",
        round(1000 * overhead_s, 2),
        "ms",
    )
    report.add(
        "overhead_per_transaction_chars",
        "  the same in character times",
        round(overhead_s / TIMING.character_s, 1),
        "chars",
    )
    report.add(
        "cycle_ratio_poll_every_char",
        "  experiment: the same with pymodbus polling every character",
        round(ratio(faster_polling.median_s, minimum_s), 3),
    )
    report.add(
        "baseline_transactions",
        "baseline: transactions per cycle (one per quantity)",
        int(statistics.median(baseline.transactions)),
    )
    report.add("baseline_cycle_s", "baseline: bus time per cycle", round(baseline.median_s, 3), "s")
    report.add("baseline_min_s", "  its wire minimum", round(baseline_minimum_s, 3), "s")
    report.add(
        "speedup",
        "coalesced speed-up over the baseline",
        round(ratio(baseline.median_s, coalesced.median_s), 2),
        "x",
    )
    lost_direct_s = with_dead.median_s - coalesced.median_s
    report.add(
        "dead_lost_direct_ms",
        f"one dead meter, bus time lost per cycle (timeout {BUS_TIMEOUT_S:g} s)",
        round(1000 * lost_direct_s, 1),
        "ms",
    )
    report.add(
        "dead_lost_poller_ms",
        f"  under BusPoller (adaptive timeout, backoff to {BACKOFF_MAX_S:g} s), per {POLL_INTERVAL_S:g} s",
        round(poller["lost_per_interval_ms"], 1),
        "ms",
    )
    report.add(
        "dead_adaptive_timeout_ms", "  its adaptive timeout", poller["adaptive_timeout_ms"], "ms"
    )
    report.details.update(
        line={
            "baudrate": BAUDRATE,
            "opened_as": f"8{PARITY}{STOPBITS}",
            "timed_as": "8E1 (11-bit)",
            "character_ms": 1000 * TIMING.character_s,
            "t3_5_ms": 1000 * TIMING.silence_s,
        },
        coalesced={
            "cycle_s": coalesced.seconds,
            "transactions": coalesced.transactions,
            "plan": {
                m.profile.name: [(r.function, r.address, r.count) for r in plan_profile(m.profile)]
                for m in alive[::10]
            },
        },
        baseline={"cycle_s": baseline.seconds, "transactions": baseline.transactions},
        dead_direct={"cycle_s": with_dead.seconds, "timeout_s": BUS_TIMEOUT_S},
        dead_poller=poller,
        pymodbus_receive_poll_ms=1000 * pymodbus_poll_s,
        poll_every_character={"cycle_s": faster_polling.seconds},
        sizes=dataclasses.asdict(sizes),
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer cycles: about a minute")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the dead meter's warnings are expected
    box = machine()
    print(f"{box['date']}  {box['cpu']}  nproc {box['nproc']}  Python {box['python']}\n")
    report = run(QUICK if args.quick else FULL)
    path = write_results(report)
    print(render(report))
    print(f"  -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
