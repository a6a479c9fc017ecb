"""The DL/T 645 client against emulated meters over socat pty pairs at the field default 2400 8E1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from drivers.dlt645.client import Dlt645Bus, Dlt645ErrorReply, Dlt645InvalidReply, Dlt645Link
from drivers.dlt645.emulation import SPLIT_BLOCK, SPLIT_BLOCK_PARTS, EmulatedDlt645Meter
from drivers.dlt645.identifiers import DEFAULT_IDENTIFIERS, Dlt645Device, identifiers
from drivers.emulation.load import LoadModel
from drivers.emulation.server import EmulatorServer
from gateway.config import SerialBus
from tests.support.serial_pair import SocatPair, serial_pair

ADDRESS = "123456789012"
TIMEOUT_S = 0.3


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def meter(clock: FakeClock) -> EmulatedDlt645Meter:
    return EmulatedDlt645Meter(ADDRESS, seed=5, clock=clock, slow_delay_s=0.6)


@pytest.fixture
def line(meter: EmulatedDlt645Meter) -> Iterator[serial.Serial]:
    """An open 2400 8E1 port with the meter answering on the other end of the pty pair."""
    with serial_pair() as pair, EmulatorServer(dlt645_meters=[meter]) as server:
        server.serve_serial(str(pair.a), baudrate=2400, parity="E")
        port = serial.Serial(str(pair.b), baudrate=2400, parity="E", timeout=TIMEOUT_S)
        yield port
        port.close()


@pytest.fixture
def link(line: serial.Serial) -> Dlt645Link:
    return Dlt645Link(line, timeout_s=TIMEOUT_S)


def test_readings_are_plausible(link: Dlt645Link, meter: EmulatedDlt645Meter) -> None:
    snapshot = link.read_device("dlt", ADDRESS, DEFAULT_IDENTIFIERS)
    assert snapshot.quality == "ok", snapshot.error
    assert snapshot.error is None and snapshot.flags == {}
    v = snapshot.values
    assert set(v) == {identifiers()[di].quantity for di in DEFAULT_IDENTIFIERS}
    truth = meter.values()  # the clock stands still: the same moment
    for di in DEFAULT_IDENTIFIERS:
        entry = identifiers()[di]
        resolution = entry.factor / 10**entry.decimals
        assert v[entry.quantity] == pytest.approx(truth[entry.quantity], abs=resolution * 0.501)
    for phase in (1, 2, 3):
        assert 225 <= v[f"voltage_l{phase}_v"] <= 235
        assert v[f"current_l{phase}_a"] > 0
    assert v["active_power_w"] == pytest.approx(
        sum(v[f"active_power_l{p}_w"] for p in (1, 2, 3)), abs=0.3
    )
    assert 1000 < v["active_power_w"] < 20000  # kW became W
    assert 49.9 <= v["frequency_hz"] <= 50.1
    assert 0.85 <= v["power_factor"] <= 1.0
    assert v["active_energy_export_kwh"] == 0.0


def test_energy_follows_power_with_an_accelerated_clock(link: Dlt645Link, clock: FakeClock) -> None:
    start = link.read_device("dlt", ADDRESS, ["00010000"]).values["active_energy_import_kwh"]
    step_s, steps = 10.0, 180  # half an hour of meter time
    powers = []
    for _ in range(steps + 1):
        powers.append(link.read_device("dlt", ADDRESS, ["02030000"]).values["active_power_w"])
        clock.now += step_s
    clock.now -= step_s
    end = link.read_device("dlt", ADDRESS, ["00010000"]).values["active_energy_import_kwh"]
    mean_w = (sum(powers) - (powers[0] + powers[-1]) / 2) / steps
    expected_kwh = mean_w * steps * step_s / 3.6e6
    assert expected_kwh > 0.5
    assert end - start == pytest.approx(expected_kwh, abs=0.02)


def test_discovery_returns_the_lone_meters_address(link: Dlt645Link) -> None:
    assert link.read_address() == ADDRESS


def test_discovery_with_two_meters_reports_the_collision(clock: FakeClock) -> None:
    meters = [EmulatedDlt645Meter(a, clock=clock) for a in (ADDRESS, "000000000007")]
    with serial_pair() as pair, EmulatorServer(dlt645_meters=meters) as server:
        server.serve_serial(str(pair.a), baudrate=2400, parity="E")
        with serial.Serial(str(pair.b), baudrate=2400, parity="E", timeout=TIMEOUT_S) as port:
            link = Dlt645Link(port, timeout_s=TIMEOUT_S)
            with pytest.raises(Dlt645InvalidReply, match="reading the address"):
                link.read_address()
            # Addressed reads still reach each meter on its own.
            assert link.read_device("b", "000000000007", ["02010100"]).quality == "ok"


def test_follow_up_frames_are_reassembled(link: Dlt645Link, meter: EmulatedDlt645Meter) -> None:
    block = link.read(ADDRESS, SPLIT_BLOCK)
    singles = b"".join(link.read(ADDRESS, di) for di in SPLIT_BLOCK_PARTS)
    assert len(block) == 12
    assert block == singles  # frozen clock: the same values, in the same order
    assert meter.requests == 2 + len(SPLIT_BLOCK_PARTS)  # 0x11 and one 0x12, then singles


def test_unknown_identifier_gets_an_error_reply(link: Dlt645Link) -> None:
    with pytest.raises(
        Dlt645ErrorReply, match=r"^DL/T 645 error reply: no requested data \(04000101\)$"
    ):
        link.read(ADDRESS, "04000101")


def test_error_reply_fault_is_an_exception_quality(
    link: Dlt645Link, meter: EmulatedDlt645Meter
) -> None:
    meter.fault = "error_reply"
    snapshot = link.read_device("dlt", ADDRESS, ["02010100", "00010000"])
    assert snapshot.quality == "exception"
    assert snapshot.error == "DL/T 645 error reply: no requested data (02010100)"
    assert snapshot.values == {}


def test_silent_meter_times_out(link: Dlt645Link, meter: EmulatedDlt645Meter) -> None:
    meter.fault = "silent"
    began = time.monotonic()
    snapshot = link.read_device("dlt", ADDRESS, ["02010100"])
    assert snapshot.quality == "timeout"
    assert snapshot.error == (
        f"no response from DL/T 645 meter {ADDRESS} within {TIMEOUT_S:g} s reading 02010100 from {ADDRESS}"
    )
    assert time.monotonic() - began < 3 * TIMEOUT_S


def test_unknown_address_gets_no_answer(link: Dlt645Link) -> None:
    assert link.read_device("dlt", "000000000099", ["02010100"]).quality == "timeout"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("garbage", "10 bytes arrived, no DL/T 645 frame in them"),
        ("bad_checksum", "bytes arrived, bad checksum"),
    ],
)
def test_bad_bytes_are_an_invalid_response(
    link: Dlt645Link, meter: EmulatedDlt645Meter, fault: str, reason: str
) -> None:
    meter.fault = fault
    snapshot = link.read_device("dlt", ADDRESS, ["02010100"])
    assert snapshot.quality == "invalid_response"
    assert snapshot.error is not None
    assert snapshot.error.startswith(f"invalid DL/T 645 reply reading 02010100 from {ADDRESS}: ")
    assert reason in snapshot.error
    meter.fault = None
    assert link.read_device("dlt", ADDRESS, ["02010100"]).quality == "ok"


def test_slow_meter_times_out_and_its_late_answer_is_not_taken_for_the_next(
    link: Dlt645Link, meter: EmulatedDlt645Meter
) -> None:
    meter.fault = "slow"
    assert link.read_device("dlt", ADDRESS, ["02010100"]).quality == "timeout"
    meter.fault = None
    time.sleep(meter.slow_delay_s)  # the late voltage answer lands in the input buffer
    snapshot = link.read_device("dlt", ADDRESS, ["00010000"])
    assert snapshot.quality == "ok"
    assert set(snapshot.values) == {"active_energy_import_kwh"}


class OffGridLoad(LoadModel):
    """A generator running far too fast: its frequency is outside the vocabulary's range."""

    def sample(self) -> dict[str, float]:
        return {**super().sample(), "frequency_hz": 99.0}


def test_out_of_range_values_are_flagged(clock: FakeClock) -> None:
    meter = EmulatedDlt645Meter(ADDRESS, OffGridLoad(seed=1, clock=clock))
    with serial_pair() as pair, EmulatorServer(dlt645_meters=[meter]) as server:
        server.serve_serial(str(pair.a), baudrate=2400, parity="E")
        with serial.Serial(str(pair.b), baudrate=2400, parity="E", timeout=TIMEOUT_S) as port:
            snapshot = Dlt645Link(port, timeout_s=TIMEOUT_S).read_device(
                "dlt", ADDRESS, ["02800002", "02010100"]
            )
    assert snapshot.quality == "out_of_range"
    assert snapshot.flags == {"frequency_hz": "out_of_range"}
    assert snapshot.values["frequency_hz"] == 99.0


def test_reversed_current_transformers_read_negative(clock: FakeClock) -> None:
    load = LoadModel(seed=1, clock=clock, reversed_ct=(1, 2, 3))
    with (
        serial_pair() as pair,
        EmulatorServer(dlt645_meters=[EmulatedDlt645Meter(ADDRESS, load)]) as server,
    ):
        server.serve_serial(str(pair.a), baudrate=2400, parity="E")
        with serial.Serial(str(pair.b), baudrate=2400, parity="E", timeout=TIMEOUT_S) as port:
            snapshot = Dlt645Link(port, timeout_s=TIMEOUT_S).read_device(
                "dlt", ADDRESS, ["02030000", "02060000", "02010100"]
            )
    # A reversed CT is plausible (negative power is a reading, not an error) ...
    assert snapshot.quality == "ok"
    assert snapshot.values["active_power_w"] < 0
    assert snapshot.values["power_factor"] < 0


def test_meters_without_preambles_are_understood(clock: FakeClock) -> None:
    quiet = EmulatedDlt645Meter(ADDRESS, clock=clock, preamble=0)
    with serial_pair() as pair, EmulatorServer(dlt645_meters=[quiet]) as server:
        server.serve_serial(str(pair.a), baudrate=2400, parity="E")
        with serial.Serial(str(pair.b), baudrate=2400, parity="E", timeout=TIMEOUT_S) as port:
            link = Dlt645Link(port, timeout_s=TIMEOUT_S, preamble=0)
            assert link.read_device("dlt", ADDRESS, ["02010100"]).quality == "ok"


# -- Dlt645Bus: a port of its own ------------------------------------------------------------


def bus_for(path: Path | str) -> SerialBus:
    return SerialBus("rs485", str(path), baudrate=2400, parity="E", timeout_s=TIMEOUT_S)


def test_bus_reads_a_device(meter: EmulatedDlt645Meter) -> None:
    device = Dlt645Device("dlt", ADDRESS)
    with serial_pair() as pair, EmulatorServer(dlt645_meters=[meter]) as server:
        server.serve_serial(str(pair.a), baudrate=2400, parity="E")
        reader = Dlt645Bus(bus_for(pair.b))
        try:
            snapshot = reader.read(device)
            assert snapshot.quality == "ok"
            assert len(snapshot.values) == len(DEFAULT_IDENTIFIERS)
            assert reader.read_address() == ADDRESS
        finally:
            reader.close()


def test_bus_port_missing_then_plugged_in_and_lost_again(
    meter: EmulatedDlt645Meter, tmp_path: Path
) -> None:
    pair = SocatPair(tmp_path)
    device = Dlt645Device("dlt", ADDRESS, ("02010100",))
    reader = Dlt645Bus(bus_for(pair.b))
    missing = reader.read(device)
    assert missing.quality == "no_connection"
    assert missing.error == f"serial port {pair.b} not found (adapter unplugged?)"
    try:
        with EmulatorServer(dlt645_meters=[meter]) as server:
            pair.start()
            server.serve_serial(str(pair.a), baudrate=2400, parity="E")
            assert reader.read(device).quality == "ok"
            pair.stop()  # the adapter is pulled out
            gone = reader.read(device)
            assert gone.quality == "no_connection", gone
            assert gone.error is not None and gone.error.startswith(
                f"lost connection to serial port {pair.b}"
            )
            pair.start()  # and plugged back in: same paths, new ptys
            server.serve_serial(str(pair.a), baudrate=2400, parity="E")
            assert reader.read(device).quality == "ok"
    finally:
        reader.close()
        pair.stop()
