"""One RS-485 line at 2400 8E1 carrying a Modbus SDM630 and a DL/T 645 meter, read alternately."""

from __future__ import annotations

import struct

import pytest
import serial
from pymodbus.client import ModbusSerialClient

from drivers.dlt645.client import Dlt645Bus, Dlt645Link
from drivers.dlt645.emulation import EmulatedDlt645Meter
from drivers.dlt645.frame import read_request
from drivers.dlt645.identifiers import Dlt645Device
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer, rtu_frame, split_line
from drivers.modbus import ModbusBus
from drivers.profile import load_shipped_profile
from gateway.config import Device, SerialBus
from tests.support.serial_pair import serial_pair

ADDRESS = "123456789012"
TIMEOUT_S = 0.5
ROUNDS = 15


class FrozenClock:
    def __call__(self) -> float:
        return 1_700_000_000.0


@pytest.fixture
def sdm630() -> EmulatedMeter:
    return EmulatedMeter(1, load_shipped_profile("eastron_sdm630"), seed=1, clock=FrozenClock())


@pytest.fixture
def dlt645() -> EmulatedDlt645Meter:
    return EmulatedDlt645Meter(ADDRESS, seed=2, clock=FrozenClock())


def test_one_open_port_shared_by_pymodbus_and_the_dlt645_link(
    sdm630: EmulatedMeter, dlt645: EmulatedDlt645Meter
) -> None:
    modbus_volts = sdm630.load.sample()["voltage_l1_v"]
    dlt_volts = dlt645.values()["voltage_l1_v"]
    assert abs(modbus_volts - dlt_volts) > 0.2  # distinct meters: cross-talk would show
    with serial_pair() as pair, EmulatorServer([sdm630], [dlt645]) as server:
        server.serve_serial(str(pair.a), baudrate=2400, parity="E")
        # The port is opened once and handed to both protocols. (pymodbus's own connect()
        # reconfigures the port after opening it, which a Linux pty refuses with parity E.)
        port = serial.Serial(str(pair.b), baudrate=2400, parity="E", timeout=TIMEOUT_S)
        client = ModbusSerialClient(
            str(pair.b), baudrate=2400, parity="E", timeout=TIMEOUT_S, retries=0
        )
        client.socket = port
        try:
            link = Dlt645Link(port, timeout_s=TIMEOUT_S)
            for _ in range(ROUNDS):
                response = client.read_input_registers(0x0000, count=2, device_id=1)
                assert not response.isError()
                (volts,) = struct.unpack(">f", struct.pack(">HH", *response.registers))
                assert volts == pytest.approx(modbus_volts, abs=1e-3)
                snapshot = link.read_device("dlt", ADDRESS, ["02010100", "00010000"])
                assert snapshot.quality == "ok", snapshot.error
                assert snapshot.values["voltage_l1_v"] == pytest.approx(dlt_volts, abs=0.051)
        finally:
            client.close()
    assert sdm630.requests == ROUNDS
    assert dlt645.requests == 2 * ROUNDS


def test_modbus_bus_and_dlt645_bus_on_the_same_serial_bus(
    sdm630: EmulatedMeter, dlt645: EmulatedDlt645Meter
) -> None:
    # What a poller does with a mixed bus: one reader per protocol, same SerialBus, polled in
    # turn from the bus's one thread (each opens the device; the tty's queue is shared).
    with serial_pair() as pair, EmulatorServer([sdm630], [dlt645]) as server:
        server.serve_serial(str(pair.a), baudrate=2400)
        # Parity N here: ModbusBus opens through pymodbus, whose reconfiguring a Linux pty
        # refuses with parity E (real UARTs take it); the line's behaviour is the same.
        bus = SerialBus("rs485", str(pair.b), baudrate=2400, parity="N", timeout_s=TIMEOUT_S)
        modbus = ModbusBus(bus)
        dlt = Dlt645Bus(bus)
        sdm = Device("sdm", "rs485", 1, load_shipped_profile("eastron_sdm630"))
        chint = Dlt645Device("dlt", ADDRESS)
        try:
            for _ in range(5):
                first = modbus.read(sdm)
                second = dlt.read(chint)
                assert first.quality == "ok", first.error
                assert second.quality == "ok", second.error
                assert first.values["voltage_l1_v"] != pytest.approx(
                    second.values["voltage_l1_v"], abs=0.2
                )
        finally:
            modbus.close()
            dlt.close()


def test_the_line_splitter_tells_the_protocols_apart() -> None:
    dlt = read_request(ADDRESS, "02010100")
    to_unit_0x68 = rtu_frame(0x68, struct.pack(">BHH", 4, 0x0000, 2))  # starts with 68 too
    to_unit_1 = rtu_frame(1, struct.pack(">BHH", 3, 0x0010, 4))
    buf = bytearray(b"\x00\x13" + dlt.encode(4) + to_unit_0x68 + dlt.encode(0) + to_unit_1)
    assert split_line(buf, final=False) == dlt
    assert split_line(buf, final=False) == (0x68, struct.pack(">BHH", 4, 0x0000, 2))
    assert split_line(buf, final=False) == dlt
    assert split_line(buf, final=False) == (1, struct.pack(">BHH", 3, 0x0010, 4))
    assert buf == bytearray()


def test_the_line_splitter_waits_for_a_dlt645_frame_and_drops_a_corrupt_one() -> None:
    wire = read_request(ADDRESS, "02010100").encode(4)
    buf = bytearray(wire[:12])
    assert split_line(buf, final=False) is None  # still arriving
    buf += wire[12:]
    assert split_line(buf, final=False) == read_request(ADDRESS, "02010100")
    spoiled = bytearray(wire)
    spoiled[-2] ^= 0xFF
    buf = bytearray(spoiled)
    assert split_line(buf, final=True) is None
    assert buf == bytearray()
