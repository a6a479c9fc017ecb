"""The Modbus driver against emulated meters over a real socat pty pair (RTU) and over TCP."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.codec import decode
from drivers.emulation.encode import encode
from drivers.emulation.load import LoadModel
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer, crc16
from drivers.modbus import ModbusBus
from drivers.profile import load_shipped_profile, profile_from_mapping
from drivers.snapshot import Snapshot
from gateway.config import Device, SerialBus, TcpBus
from tests.support.serial_pair import SocatPair, serial_pair

SDM630 = load_shipped_profile("eastron_sdm630")
DTSU666 = load_shipped_profile("chint_dtsu666")
TIMEOUT_S = 0.2
SDM = Device("sdm", "bus", 1, SDM630)
DTSU = Device("dtsu", "bus", 2, DTSU666)


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def two_meters(clock: FakeClock) -> list[EmulatedMeter]:
    return [
        EmulatedMeter(1, SDM630, seed=1, clock=clock, slow_delay_s=0.5),
        EmulatedMeter(2, DTSU666, seed=2, clock=clock),
    ]


@pytest.fixture
def socat() -> Iterator[SocatPair]:
    with serial_pair() as pair:
        yield pair


@pytest.fixture(params=["rtu", "tcp"])
def bus(request: pytest.FixtureRequest, two_meters: list[EmulatedMeter]) -> Iterator[ModbusBus]:
    """A ModbusBus reading the two meters over RTU (socat ptys) or TCP."""
    if request.param == "rtu":
        with serial_pair() as pair, EmulatorServer(two_meters) as server:
            server.serve_serial(str(pair.a))
            reader = ModbusBus(SerialBus("bus", str(pair.b), timeout_s=TIMEOUT_S))
            yield reader
            reader.close()
    else:
        with EmulatorServer(two_meters) as server:
            port = server.serve_tcp()
            reader = ModbusBus(TcpBus("bus", "127.0.0.1", port, timeout_s=TIMEOUT_S))
            yield reader
            reader.close()


def expected_values(meter: EmulatedMeter) -> dict[str, float]:
    """What the meter's registers hold right now, as the codec reads them."""
    values = meter.load.sample()
    out = {}
    for register in meter.profile.registers:
        words = encode(values[register.quantity], register.type, scale=register.scale)
        value = decode(register, words)
        assert value is not None
        out[register.quantity] = value
    return out


def until_quality(reader: ModbusBus, device: Device, quality: str, tries: int = 10) -> Snapshot:
    for _ in range(tries):
        snapshot = reader.read(device)
        if snapshot.quality == quality:
            return snapshot
        time.sleep(0.05)
    raise AssertionError(f"still {snapshot.quality} ({snapshot.error}) after {tries} reads")


# -- reading ---------------------------------------------------------------------------------


def test_two_meters_on_one_bus(bus: ModbusBus, two_meters: list[EmulatedMeter]) -> None:
    before = time.time_ns() // 1_000_000
    sdm, dtsu = bus.read(SDM), bus.read(DTSU)
    after = time.time_ns() // 1_000_000
    for snapshot, meter in ((sdm, two_meters[0]), (dtsu, two_meters[1])):
        assert snapshot.quality == "ok", snapshot.error
        assert snapshot.flags == {} and snapshot.error is None
        assert before <= snapshot.ts_ms <= after
        assert snapshot.values == expected_values(meter)
        assert 220 < snapshot.values["voltage_l1_v"] < 240
        assert 49.9 < snapshot.values["frequency_hz"] < 50.1
    assert sdm.device == "sdm" and dtsu.device == "dtsu"
    assert dtsu.values["power_factor"] == pytest.approx(0.945, abs=0.045)


def test_only_the_configured_quantities_are_read(
    bus: ModbusBus, two_meters: list[EmulatedMeter]
) -> None:
    wanted = ("active_power_w", "active_energy_import_kwh")
    snapshot = bus.read(Device("sdm", "bus", 1, SDM630, quantities=wanted))
    assert snapshot.quality == "ok" and set(snapshot.values) == set(wanted)
    assert two_meters[0].requests == 2  # 0x0034 and 0x0048: two requests, not three


def test_exception_fault_leaves_the_other_meter_alone(
    bus: ModbusBus, two_meters: list[EmulatedMeter]
) -> None:
    two_meters[0].fault = "exception"
    failed, fine = bus.read(SDM), bus.read(DTSU)
    assert failed.quality == "exception" and failed.values == {}
    assert failed.error == "Modbus exception 4 (server device failure) reading FC04 0x0000+18"
    assert fine.quality == "ok" and len(fine.values) == 14


def test_silent_meter_times_out(bus: ModbusBus, two_meters: list[EmulatedMeter]) -> None:
    two_meters[1].fault = "silent"
    started = time.monotonic()
    snapshot = bus.read(DTSU)
    assert time.monotonic() - started < TIMEOUT_S * 3  # gave up after the first request
    assert snapshot.quality == "timeout" and snapshot.values == {}
    assert snapshot.error == "no response from unit 2 within 0.2 s reading FC03 0x101E+2"
    assert bus.read(SDM).quality == "ok"
    two_meters[1].fault = None
    assert bus.read(DTSU).quality == "ok"


def test_garbage_is_an_invalid_response(bus: ModbusBus, two_meters: list[EmulatedMeter]) -> None:
    two_meters[0].fault = "garbage"
    snapshot = bus.read(SDM)
    assert snapshot.quality == "invalid_response" and snapshot.values == {}
    assert snapshot.error is not None and "no valid response" in snapshot.error
    two_meters[0].fault = None
    assert bus.read(SDM).quality == "ok"


def test_nan_values_are_flagged_invalid(bus: ModbusBus, two_meters: list[EmulatedMeter]) -> None:
    two_meters[1].fault = "nan"
    snapshot = bus.read(DTSU)
    assert snapshot.quality == "out_of_range"
    assert snapshot.values == {}
    assert snapshot.flags == {r.quantity: "invalid" for r in DTSU666.registers}


def test_implausible_values_are_kept_and_flagged(
    bus: ModbusBus, two_meters: list[EmulatedMeter]
) -> None:
    two_meters[0].fault = "out_of_range"
    snapshot = bus.read(
        Device("sdm", "bus", 1, SDM630, quantities=("voltage_l1_v", "current_l1_a"))
    )
    assert snapshot.quality == "out_of_range"
    assert snapshot.values == {"voltage_l1_v": 9999.0, "current_l1_a": 999999.0}
    assert snapshot.flags == {"voltage_l1_v": "out_of_range", "current_l1_a": "out_of_range"}


def test_unmapped_register_names_the_exception(bus: ModbusBus) -> None:
    profile = profile_from_mapping(
        "wrong_map",
        {"quantities": {"active_power_w": {"function": 4, "address": 0x1000, "type": "f32"}}},
        "test",
    )
    snapshot = bus.read(Device("wrong", "bus", 1, profile))
    assert snapshot.quality == "exception"
    assert snapshot.error == "Modbus exception 2 (illegal data address) reading FC04 0x1000+2"


def test_slow_meter_times_out_and_its_late_answer_does_no_harm(
    bus: ModbusBus, two_meters: list[EmulatedMeter]
) -> None:
    two_meters[0].fault = "slow"  # answers after 0.5 s; the bus waits 0.2 s
    assert bus.read(SDM).quality == "timeout"
    two_meters[0].fault = None
    time.sleep(0.5)  # the late answer is now waiting in the gateway's receive buffer
    for device, meter in ((SDM, two_meters[0]), (DTSU, two_meters[1])):
        snapshot = bus.read(device)
        assert snapshot.quality == "ok" and snapshot.values == expected_values(meter)


def test_pymodbus_does_not_log_each_timeout(
    two_meters: list[EmulatedMeter], caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("pymodbus").setLevel(logging.NOTSET)  # as in a fresh process
    caplog.set_level(logging.DEBUG)
    two_meters[0].fault = "silent"
    with EmulatorServer(two_meters) as server:
        reader = ModbusBus(TcpBus("bus", "127.0.0.1", server.serve_tcp(), timeout_s=TIMEOUT_S))
        assert reader.read(SDM).quality == "timeout"
        reader.close()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pymodbus")] == []


# -- energy ----------------------------------------------------------------------------------


def test_energy_counters_follow_power_with_an_accelerated_clock() -> None:
    clock = FakeClock()
    meter = EmulatedMeter(1, SDM630, load=LoadModel(seed=9, clock=clock, import_kwh=0.0))
    device = Device(
        "sdm", "bus", 1, SDM630, quantities=("active_power_w", "active_energy_import_kwh")
    )
    with EmulatorServer([meter]) as server:
        reader = ModbusBus(TcpBus("bus", "127.0.0.1", server.serve_tcp(), timeout_s=1.0))
        readings = []
        for _ in range(301):  # five minutes of meter time, one reading per meter second
            snapshot = reader.read(device)
            assert snapshot.quality == "ok", snapshot.error
            readings.append(snapshot.values)
            clock.now += 1.0
        reader.close()
    powers = [r["active_power_w"] for r in readings]
    mean_w = (sum(powers) - (powers[0] + powers[-1]) / 2) / (len(powers) - 1)
    delta_kwh = readings[-1]["active_energy_import_kwh"] - readings[0]["active_energy_import_kwh"]
    assert delta_kwh == pytest.approx(mean_w * 300 / 3.6e6, rel=1e-5)
    assert min(powers) < max(powers)  # the load did change meanwhile


# -- losing and regaining the line ------------------------------------------------------------


def test_tcp_server_restart_recovers_without_a_new_bus(two_meters: list[EmulatedMeter]) -> None:
    first = EmulatorServer(two_meters)
    port = first.serve_tcp()
    reader = ModbusBus(TcpBus("bus", "127.0.0.1", port, timeout_s=TIMEOUT_S))
    assert reader.read(SDM).quality == "ok"
    first.stop()
    lost = reader.read(SDM)
    assert lost.quality in ("no_connection", "timeout") and lost.values == {}
    refused = reader.read(SDM)
    assert refused.quality == "no_connection"
    assert refused.error == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    with EmulatorServer(two_meters) as second:
        second.serve_tcp("127.0.0.1", port)
        assert reader.read(SDM).quality == "ok"
        assert reader.read(DTSU).quality == "ok"
    reader.close()


def test_serial_port_missing_then_plugged_in(
    two_meters: list[EmulatedMeter], tmp_path: Path
) -> None:
    pair = SocatPair(tmp_path)
    reader = ModbusBus(SerialBus("bus", str(pair.b), timeout_s=TIMEOUT_S))
    snapshot = reader.read(SDM)
    assert snapshot.quality == "no_connection"
    assert snapshot.error == f"serial port {pair.b} not found (adapter unplugged?)"
    pair.start()
    try:
        with EmulatorServer(two_meters) as server:
            server.serve_serial(str(pair.a))
            assert reader.read(SDM).quality == "ok"
    finally:
        reader.close()
        pair.stop()


def test_serial_link_lost_and_back(socat: SocatPair, two_meters: list[EmulatedMeter]) -> None:
    reader = ModbusBus(SerialBus("bus", str(socat.b), timeout_s=TIMEOUT_S))
    with EmulatorServer(two_meters) as server:
        server.serve_serial(str(socat.a))
        assert reader.read(DTSU).quality == "ok"
        socat.stop()  # the adapter is pulled out
        gone = [reader.read(DTSU) for _ in range(2)]
        assert all(s.quality == "no_connection" and s.values == {} for s in gone)
        assert gone[-1].error == f"serial port {socat.b} not found (adapter unplugged?)"
        socat.start()  # and plugged back in: same paths, new ptys
        server.serve_serial(str(socat.a))
        snapshot = until_quality(reader, DTSU, "ok", tries=3)
        assert snapshot.values == expected_values(two_meters[1])
    reader.close()


def test_serial_path_pointing_elsewhere_is_reopened(
    two_meters: list[EmulatedMeter], tmp_path: Path
) -> None:
    # The old device still exists but the path now names another one (udev gave the name to a
    # new adapter): timeouts on the old one make the driver notice and reopen the path.
    link = tmp_path / "ttyRS485"
    with EmulatorServer(two_meters[:1]) as old, EmulatorServer(two_meters[1:]) as new:
        old.start_pty(link)
        reader = ModbusBus(SerialBus("bus", str(link), timeout_s=TIMEOUT_S))
        assert reader.read(SDM).quality == "ok"
        new.start_pty(link)
        moved = reader.read(DTSU)  # unit 2 is not on the old line
        assert moved.quality == "no_connection"
        assert moved.error is not None and "now names another device" in moved.error
        assert reader.read(DTSU).quality == "ok"
        reader.close()


# -- hand-written bytes on the wire -----------------------------------------------------------


class ScriptedLine:
    """The far end of a pty that answers each request with the next prepared frame."""

    def __init__(self, answers: list[bytes]) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.answers = answers
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.answers:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                self.requests.append(os.read(self.master, 256))
                os.write(self.master, self.answers.pop(0))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        os.close(self.master)
        os.close(self.slave)


VOLTAGES = Device(
    "sdm", "bus", 1, SDM630, quantities=("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")
)


def scripted_read(answer_hex: str, device: Device = VOLTAGES) -> tuple[Snapshot, list[bytes]]:
    line = ScriptedLine([bytes.fromhex(answer_hex.replace(" ", ""))])
    reader = ModbusBus(SerialBus("bus", line.path, timeout_s=TIMEOUT_S))
    try:
        return reader.read(device), line.requests
    finally:
        reader.close()
        line.close()


def test_golden_sdm630_frame_through_the_driver() -> None:
    snapshot, requests = scripted_read("01 04 0C 4366 199A 4366 8000 4367 3333 DE44")
    assert requests == [bytes.fromhex("01 04 0000 0006 7008".replace(" ", ""))]
    assert snapshot.quality == "ok"
    assert snapshot.values == {"voltage_l1_v": 230.1, "voltage_l2_v": 230.5, "voltage_l3_v": 231.2}


def test_golden_dtsu666_frame_through_the_driver() -> None:
    device = Device("dtsu", "bus", 2, DTSU666, quantities=("frequency_hz",))
    snapshot, requests = scripted_read("02 03 04 459C 5000 2011", device)
    assert requests[0][:6] == bytes.fromhex("0203 2044 0002")
    assert int.from_bytes(requests[0][6:], "little") == crc16(requests[0][:6])
    assert snapshot.quality == "ok" and snapshot.values == {"frequency_hz": 50.02}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        # Valid CRC, but 4 registers where 6 were asked for.
        ("01 04 08 4366 199A 4366 8000 " + "{crc}", "answer has 4 registers reading FC04 0x0000+6"),
        # Bad CRC.
        ("01 04 0C 4366 199A 4366 8000 4367 3333 DE45", "no valid response"),
        # Another unit's answer.
        ("09 04 0C 4366 199A 4366 8000 4367 3333 {crc}", "no valid response"),
    ],
)
def test_malformed_answers_are_invalid_responses(answer: str, error: str) -> None:
    body = bytes.fromhex(answer.replace("{crc}", "").replace(" ", ""))
    answer = answer.replace("{crc}", crc16(body).to_bytes(2, "little").hex())
    snapshot, _ = scripted_read(answer)
    assert snapshot.quality == "invalid_response" and snapshot.values == {}
    assert snapshot.error is not None and error in snapshot.error
