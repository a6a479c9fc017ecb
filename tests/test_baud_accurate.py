"""The baud-accurate emulated line: reads take their wire time (FACTS.md 6), no less, and not
much more; latency adds to it; wrong-unit and bad-CRC answers get the driver's qualities."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer, LineTiming
from drivers.modbus import ModbusBus
from drivers.plan import plan_profile
from drivers.profile import load_shipped_profile
from gateway.config import Device, SerialBus
from tests.support.serial_pair import serial_pair

DTSU666 = load_shipped_profile("chint_dtsu666")
# The DTSU666's 20-register block (voltages and currents): one request of n = 20.
BLOCK = max(plan_profile(DTSU666), key=lambda request: request.count)
DEVICE = Device("dtsu", "bus", 1, DTSU666, quantities=tuple(r.quantity for r in BLOCK.registers))
TIMEOUT_S = 0.3
READS = 6
# What the driver may add to a read on top of the wire time and the meter's latency: pymodbus
# looks for new bytes every 4 character times and stops after one look finds none (up to
# 8 character times after the last byte), plus Python's own time.
DRIVER_SLACK_CHARACTERS = 9
DRIVER_SLACK_S = 0.006
# 8N2: the same 11-bit character as 8E1 (FACTS.md 6). Some kernels' ptys refuse parity
# (tcsetattr with PARENB fails with EINVAL); two stop bits open everywhere.
PARITY = "N"
STOPBITS = 2


@dataclass
class Line:
    meter: EmulatedMeter
    reader: ModbusBus
    timing: LineTiming


@contextmanager
def open_line(baudrate: int) -> Iterator[Line]:
    """A baud-accurate 8N2 line at `baudrate` with one DTSU666, read once (the port opened)."""
    meter = EmulatedMeter(1, DTSU666, seed=1)
    with serial_pair() as pair, EmulatorServer([meter]) as server:
        server.serve_serial(str(pair.a), baudrate, PARITY, STOPBITS, baud_accurate=True)
        bus = SerialBus(
            "bus",
            str(pair.b),
            baudrate=baudrate,
            parity=PARITY,
            stopbits=STOPBITS,
            timeout_s=TIMEOUT_S,
        )
        reader = ModbusBus(bus)
        try:
            assert reader.read(DEVICE).quality == "ok"  # opens the port; not timed
            yield Line(meter, reader, LineTiming.of(baudrate, PARITY, STOPBITS))
        finally:
            reader.close()


@pytest.fixture
def line() -> Iterator[Line]:
    with open_line(9600) as opened:
        yield opened


def seconds_per_read(line: Line, reads: int = READS) -> float:
    """Mean time of back-to-back reads: each includes the t3.5 the driver keeps after the last."""
    started = time.monotonic()
    for _ in range(reads):
        assert line.reader.read(DEVICE).quality == "ok"
    return (time.monotonic() - started) / reads


def upper_bound_s(timing: LineTiming, latency_s: float = 0.0) -> float:
    slack = DRIVER_SLACK_CHARACTERS * timing.character_s + DRIVER_SLACK_S
    return timing.read_transaction_s(BLOCK.count) + latency_s + slack


def test_the_plan_reads_one_block_of_twenty_registers() -> None:
    assert (BLOCK.function, BLOCK.count) == (3, 20)
    assert plan_profile(DTSU666, DEVICE.quantities) == [BLOCK]


def test_a_read_takes_its_wire_time_at_9600_8n2(line: Line) -> None:
    minimum = line.timing.read_transaction_s(BLOCK.count)
    assert minimum == pytest.approx(60 * 11 / 9600)  # 8 + 45 characters and two t3.5
    measured = seconds_per_read(line)
    assert minimum <= measured <= upper_bound_s(line.timing)


def test_a_meter_latency_adds_to_the_read(line: Line) -> None:
    plain = seconds_per_read(line)
    line.meter.latency_s = 0.05
    slowed = seconds_per_read(line)
    assert 0.043 <= slowed - plain <= 0.06  # pymodbus polls every 4 characters: +-4.6 ms
    assert slowed <= upper_bound_s(line.timing, latency_s=0.05)


def test_2400_baud_takes_four_times_as_long_as_9600() -> None:
    with open_line(9600) as fast:
        fast_s = seconds_per_read(fast, reads=3)
    with open_line(2400) as slow:
        slow_s = seconds_per_read(slow, reads=3)
        assert slow.timing.read_transaction_s(BLOCK.count) <= slow_s <= upper_bound_s(slow.timing)
    assert 3.7 <= slow_s / fast_s <= 4.3


def test_an_answer_from_another_unit_is_an_invalid_response(line: Line) -> None:
    line.meter.fault = "wrong_unit"
    started = time.monotonic()
    snapshot = line.reader.read(DEVICE)
    elapsed = time.monotonic() - started
    assert snapshot.quality == "invalid_response" and snapshot.values == {}
    assert snapshot.error is not None and "no valid response" in snapshot.error
    # pymodbus skips the frame and waits out the whole timeout before giving up.
    assert elapsed >= TIMEOUT_S
    line.meter.fault = None
    assert line.reader.read(DEVICE).quality == "ok"


def test_a_bad_crc_is_an_invalid_response(line: Line) -> None:
    line.meter.fault = "bad_crc"
    snapshot = line.reader.read(DEVICE)
    assert snapshot.quality == "invalid_response" and snapshot.values == {}
    assert snapshot.error is not None and "no valid response" in snapshot.error
    line.meter.fault = None
    assert line.reader.read(DEVICE).quality == "ok"


def test_garbage_bytes_are_an_invalid_response_and_silence_a_timeout(line: Line) -> None:
    line.meter.fault = "garbage"
    assert line.reader.read(DEVICE).quality == "invalid_response"
    line.meter.fault = "silent"
    assert line.reader.read(DEVICE).quality == "timeout"
    line.meter.fault = None
    assert line.reader.read(DEVICE).quality == "ok"
