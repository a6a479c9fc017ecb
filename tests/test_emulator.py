"""The emulated meters: load model, register answers, faults, wire framing and `cgw emulate`."""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.emulation.encode import encode
from drivers.emulation.load import LoadModel
from drivers.emulation.meter import GARBAGE, EmulatedMeter
from drivers.emulation.server import EmulatorServer, crc16, rtu_frame, split_rtu
from drivers.modbus import ModbusBus
from drivers.profile import load_shipped_profile
from gateway.config import Device, SerialBus

SDM630 = load_shipped_profile("eastron_sdm630")
DTSU666 = load_shipped_profile("chint_dtsu666")


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def read_pdu(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


# -- load model ------------------------------------------------------------------------------


def test_load_is_plausible_over_an_hour() -> None:
    clock = FakeClock()
    load = LoadModel(seed=7, clock=clock)
    for _ in range(360):
        clock.now += 10
        v = load.sample()
        for phase in (1, 2, 3):
            assert 224 <= v[f"voltage_l{phase}_v"] <= 236
            power, volts = v[f"active_power_l{phase}_w"], v[f"voltage_l{phase}_v"]
            pf = load.power_factor_magnitude(clock.now)
            assert math.isclose(v[f"current_l{phase}_a"], power / (volts * pf), rel_tol=1e-12)
        assert 49.95 <= v["frequency_hz"] <= 50.05
        assert 0.90 <= v["power_factor"] <= 0.99
        phases = sum(v[f"active_power_l{p}_w"] for p in (1, 2, 3))
        assert math.isclose(v["active_power_w"], phases, rel_tol=1e-12)
        assert v["active_power_w"] > 0


def test_load_is_deterministic_per_seed_and_changes_over_time() -> None:
    a, b, c = (LoadModel(seed=s, clock=lambda: 1000.0) for s in (1, 1, 2))
    assert a.sample() == b.sample()
    assert a.sample()["active_power_w"] != c.sample()["active_power_w"]
    powers = {a.true_power_w(t) for t in range(0, 300, 30)}
    assert len(powers) == 10


def test_energy_grows_as_the_integral_of_power() -> None:
    clock = FakeClock()
    load = LoadModel(seed=3, clock=clock, import_kwh=100.0)
    first = load.sample()
    assert first["active_energy_import_kwh"] == 100.0
    # Mean power from samples a tenth of a second apart over ten minutes (trapezoid rule).
    start, seconds, step = clock.now, 600.0, 0.1
    samples = [sum(load.phase_powers_w(start + i * step)) for i in range(int(seconds / step) + 1)]
    mean_w = (sum(samples) - (samples[0] + samples[-1]) / 2) / (len(samples) - 1)
    clock.now = start + seconds
    last = load.sample()  # one jump of ten minutes: the model integrates the elapsed time
    delta_kwh = last["active_energy_import_kwh"] - first["active_energy_import_kwh"]
    assert delta_kwh == pytest.approx(mean_w * seconds / 3.6e6, rel=1e-5)
    assert last["active_energy_export_kwh"] == first["active_energy_export_kwh"]


def test_energy_does_not_depend_on_how_often_it_is_sampled() -> None:
    coarse_clock, fine_clock = FakeClock(), FakeClock()
    coarse = LoadModel(seed=4, clock=coarse_clock, import_kwh=0.0)
    fine = LoadModel(seed=4, clock=fine_clock, import_kwh=0.0)
    for _ in range(3600):
        fine_clock.now += 1.0
        fine.sample()
    coarse_clock.now += 3600.0
    expected = fine.sample()["active_energy_import_kwh"]
    assert coarse.sample()["active_energy_import_kwh"] == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(coarse.base_w / 1000, rel=0.35)  # ~ base power x 1 h


def test_reversed_ct_makes_that_phase_negative() -> None:
    clock = FakeClock()
    load = LoadModel(seed=5, clock=clock, reversed_ct=2, export_kwh=10.0)
    for _ in range(20):
        clock.now += 15
        v = load.sample()
        assert v["active_power_l2_w"] < 0 < v["active_power_l1_w"]
        assert v["current_l2_a"] > 0
        phases = sum(v[f"active_power_l{p}_w"] for p in (1, 2, 3))
        assert math.isclose(v["active_power_w"], phases, rel_tol=1e-12)
    with pytest.raises(ValueError):
        LoadModel(reversed_ct=4)


def test_all_cts_reversed_counts_export() -> None:
    clock = FakeClock()
    load = LoadModel(seed=6, clock=clock, reversed_ct=(1, 2, 3), import_kwh=5.0, export_kwh=0.0)
    start = clock.now
    samples = [sum(load.phase_powers_w(start + i)) for i in range(601)]
    clock.now += 600
    v = load.sample()
    assert max(samples) < 0 and v["active_power_w"] < 0
    mean_w = (sum(samples) - (samples[0] + samples[-1]) / 2) / 600
    assert v["active_energy_export_kwh"] == pytest.approx(-mean_w * 600 / 3.6e6, rel=1e-4)
    assert v["active_energy_import_kwh"] == 5.0


# -- meter -----------------------------------------------------------------------------------


def test_meter_words_are_the_encoded_load_values() -> None:
    clock = FakeClock()
    meter = EmulatedMeter(1, DTSU666, seed=1, clock=clock)
    reply = meter.respond(read_pdu(3, 0x2006, 6))
    assert reply.pdu is not None and reply.delay_s == 0 and not reply.corrupt
    assert reply.pdu[:2] == bytes([3, 12])
    words = list(struct.unpack(">6H", reply.pdu[2:]))
    v = meter.load.sample()
    expected = []
    for phase in (1, 2, 3):
        expected += encode(v[f"voltage_l{phase}_v"], "f32", scale=0.1)
    assert words == expected


def test_holes_inside_a_block_read_zero() -> None:
    meter = EmulatedMeter(1, SDM630, clock=FakeClock())
    words = meter.registers(4, 0x0010, 0x0036 - 0x0010)
    assert words[2:0x24] == [0] * 0x22  # between L3 power (0x0010) and total power (0x0034)
    assert words[:2] != [0, 0] and words[-2:] != [0, 0]


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (read_pdu(4, 0x1000, 2), 2),  # nothing mapped there
        (read_pdu(3, 0x0000, 2), 2),  # SDM630 has no holding registers in its map
        (read_pdu(4, 0x004A, 4), 2),  # runs past the last register
        (read_pdu(4, 0x0000, 0), 3),
        (read_pdu(4, 0x0000, 126), 3),
        (bytes([6, 0, 1, 0, 1]), 1),  # write single register
        (bytes([0x2B, 0x0E, 1, 0]), 1),  # read device identification
    ],
)
def test_meter_exceptions(pdu: bytes, code: int) -> None:
    reply = EmulatedMeter(1, SDM630, clock=FakeClock()).respond(pdu)
    assert reply.pdu == bytes([pdu[0] | 0x80, code])


def answer(meter: EmulatedMeter, pdu: bytes) -> bytes:
    reply = meter.respond(pdu)
    assert reply.pdu is not None
    return reply.pdu


def test_meter_faults() -> None:
    meter = EmulatedMeter(1, SDM630, clock=FakeClock(), slow_delay_s=1.5)
    request = read_pdu(4, 0, 6)
    meter.fault = "silent"
    assert meter.respond(request).pdu is None
    meter.fault = "exception"
    assert meter.respond(request).pdu == bytes([0x84, 4])
    meter.fault = "garbage"
    garbage = meter.respond(request)
    assert garbage.raw and garbage.pdu == GARBAGE
    meter.fault = "bad_crc"
    bad_crc = meter.respond(request)
    assert bad_crc.corrupt and bad_crc.pdu == answer(
        EmulatedMeter(1, SDM630, clock=FakeClock()), request
    )
    meter.fault = "wrong_unit"
    assert meter.respond(request).unit == 2
    meter.fault = "slow"
    assert meter.respond(request).delay_s == 1.5
    meter.fault = "nan"
    nan_words = struct.unpack(">6H", answer(meter, request)[2:])
    assert all(
        math.isnan(struct.unpack(">f", struct.pack(">2H", *nan_words[i : i + 2]))[0])
        for i in (0, 2, 4)
    )
    meter.fault = "out_of_range"
    words = struct.unpack(">2H", answer(meter, read_pdu(4, 0, 2))[2:])
    assert struct.unpack(">f", struct.pack(">2H", *words))[0] == 9999.0
    meter.fault = None
    assert answer(meter, request)[:2] == b"\x04\x0c"
    with pytest.raises(ValueError):
        meter.fault = "on fire"


def test_out_of_range_saturates_integer_registers() -> None:
    from drivers.profile import profile_from_mapping

    profile = profile_from_mapping(
        "int",
        {
            "quantities": {
                "voltage_l1_v": {"function": 3, "address": 0, "type": "u16", "scale": 0.1}
            }
        },
        "test",
    )
    meter = EmulatedMeter(1, profile, clock=FakeClock(), fault="out_of_range")
    assert meter.registers(3, 0, 1) == [0xFFFF]  # 9999 V does not fit: the largest u16 instead


# -- RTU framing -----------------------------------------------------------------------------


def test_crc_and_frame() -> None:
    assert rtu_frame(1, bytes.fromhex("030000000A")) == bytes.fromhex("01030000000AC5CD")
    assert crc16(b"") == 0xFFFF


def test_split_rtu_resyncs_after_garbage() -> None:
    request = rtu_frame(7, read_pdu(4, 0, 2))
    buf = bytearray(b"\x00\xff\x13" + request + request[:5])
    assert split_rtu(buf, final=False) == (7, read_pdu(4, 0, 2))
    assert split_rtu(buf, final=False) is None  # half a frame: wait for the rest
    assert len(buf) == 5
    assert split_rtu(buf, final=True) is None  # the line went quiet: drop it
    assert buf == bytearray()


def test_split_rtu_skips_an_unknown_start_when_a_request_follows() -> None:
    request = rtu_frame(3, read_pdu(3, 0x2006, 6))
    buf = bytearray(bytes([1, 0x41, 0x99]) + request)  # unknown function, no valid CRC
    assert split_rtu(buf, final=False) == (3, read_pdu(3, 0x2006, 6))
    assert buf == bytearray()


def test_split_rtu_frames_other_function_codes() -> None:
    write = rtu_frame(1, bytes([16, 0, 0, 0, 2, 4, 1, 2, 3, 4]))
    custom = rtu_frame(1, bytes([0x41, 9, 9]))
    buf = bytearray(write + custom)
    assert split_rtu(buf, final=False) == (1, bytes([16, 0, 0, 0, 2, 4, 1, 2, 3, 4]))
    assert split_rtu(buf, final=False) == (1, bytes([0x41, 9, 9]))
    assert buf == bytearray()


# -- the server on the wire ------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(
        [EmulatedMeter(1, SDM630, seed=1), EmulatedMeter(2, DTSU666, seed=2)]
    ) as running:
        yield running


def rtu_exchange(fd: int, frame: bytes, wait: float = 0.3) -> bytes:
    os.write(fd, frame)
    received = b""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        received += os.read(fd, 1024)
        if split_response_complete(received):
            break
    return received


def split_response_complete(data: bytes) -> bool:
    if len(data) >= 5 and data[1] & 0x80:
        return len(data) >= 5
    return len(data) >= 3 and len(data) >= 5 + data[2]


def open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    termios.tcflush(fd, termios.TCIOFLUSH)
    return fd


def test_rtu_over_own_pty(server: EmulatorServer, tmp_path: Path) -> None:
    link = tmp_path / "ttyEMU"
    slave = server.start_pty(link)
    assert os.path.realpath(link) == slave
    fd = open_raw(str(link))
    try:
        answer = rtu_exchange(fd, b"\x55\xaa" + rtu_frame(2, read_pdu(3, 0x2044, 2)))
        assert answer[:3] == bytes([2, 3, 4])
        assert int.from_bytes(answer[-2:], "little") == crc16(answer[:-2])
        frequency = struct.unpack(">f", answer[3:7])[0] / 100
        assert 49.9 < frequency < 50.1
        assert rtu_exchange(fd, rtu_frame(2, bytes([6, 0, 1, 0, 1])))[:3] == bytes([2, 0x86, 1])
        assert rtu_exchange(fd, rtu_frame(0, read_pdu(4, 0, 2)), wait=0.2) == b""  # broadcast
        assert rtu_exchange(fd, rtu_frame(9, read_pdu(4, 0, 2)), wait=0.2) == b""  # not served
    finally:
        os.close(fd)
    server.stop()
    assert not link.exists()


def test_rtu_bad_crc_fault_has_a_bad_crc(server: EmulatorServer) -> None:
    fd = open_raw(server.start_pty())
    try:
        server.meters[1].fault = "bad_crc"
        answer = rtu_exchange(fd, rtu_frame(1, read_pdu(4, 0, 2)))
        assert len(answer) == 9 and answer[:3] == bytes([1, 4, 4])
        assert int.from_bytes(answer[-2:], "little") != crc16(answer[:-2])
    finally:
        os.close(fd)


def tcp_exchange(sock: socket.socket, tid: int, unit: int, pdu: bytes) -> bytes:
    sock.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
    return sock.recv(1024)


def test_tcp_answers_and_keeps_quiet_for_unknown_units(server: EmulatorServer) -> None:
    port = server.serve_tcp("127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        answer = tcp_exchange(sock, 0x1234, 1, read_pdu(4, 0x0046, 2))
        assert answer[:9] == bytes.fromhex("1234 0000 0007 01 04 04".replace(" ", ""))
        assert 49.9 < struct.unpack(">f", answer[9:13])[0] < 50.1
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            tcp_exchange(sock, 2, 5, read_pdu(4, 0, 2))
        server.meters[1].fault = "bad_crc"
        sock.settimeout(1)
        answer = tcp_exchange(sock, 3, 1, read_pdu(4, 0, 2))
        assert answer[7:9] == b"\x04\x06" and len(answer) == 13  # byte count says 6, carries 4
        # Not Modbus (protocol id 1): the server hangs up.
        sock.sendall(struct.pack(">HHHB", 4, 1, 6, 1) + read_pdu(4, 0, 2))
        assert sock.recv(1024) == b""


def test_stop_is_prompt_and_frees_the_port(server: EmulatorServer) -> None:
    port = server.serve_tcp("127.0.0.1", 0)
    server.start_pty()
    client = socket.create_connection(("127.0.0.1", port), timeout=1)
    assert tcp_exchange(client, 1, 2, read_pdu(3, 0x2044, 2))[7:9] == b"\x03\x04"
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert client.recv(16) == b""
    client.close()
    with EmulatorServer([]) as again:
        assert again.serve_tcp("127.0.0.1", port) == port


# -- cgw emulate -----------------------------------------------------------------------------

# The console script the package installs, next to this interpreter.
EMULATE = [str(Path(sys.executable).parent / "cgw"), "emulate"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pty", "x", "--meter", "1:nosuch"], "no profile 'nosuch'"),
        (["--pty", "x", "--meter", "300:eastron_sdm630"], "between 1 and 247"),
        (["--pty", "x", "--meter", "1:eastron_sdm630:on_fire"], "no fault 'on_fire'"),
        (["--pty", "x", "--meter", "1:eastron_sdm630", "--meter", "1:chint_dtsu666"], "twice"),
        (["--meter", "1:eastron_sdm630"], "nothing to serve on"),
        (["--tcp", "localhost"], "expected HOST:PORT"),
        (["--serial", "/dev/null", "--baudrate", "9601"], "--baudrate 9601"),
        (["--pty", "x", "--seed", "many"], "--seed 'many'"),
    ],
)
def test_emulate_bad_arguments(arguments: list[str], message: str) -> None:
    result = subprocess.run(EMULATE + arguments, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("cgw emulate: ")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_emulate_cannot_open_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*EMULATE, "--serial", str(tmp_path / "ttyNONE")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"cgw emulate: --serial {tmp_path / 'ttyNONE'}: no such device"


def test_emulate_serves_until_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "ttyGW"
    process = subprocess.Popen(
        [
            *EMULATE,
            "--pty",
            str(link),
            "--meter",
            "3:chint_dtsu666",
            "--meter",
            "4:eastron_sdm630:exception",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(f"serving unit 3 chint_dtsu666 on {link} -> /dev/pts/")
        assert "unit 4 eastron_sdm630 with fault exception" in process.stdout.readline()
        bus = ModbusBus(SerialBus("emu", str(link), timeout_s=0.5))
        try:
            ok = bus.read(Device("d3", "emu", 3, DTSU666))
            failed = bus.read(Device("d4", "emu", 4, SDM630))
        finally:
            bus.close()
        assert ok.quality == "ok" and 49.9 < ok.values["frequency_hz"] < 50.1
        assert failed.quality == "exception"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert not link.exists()
        assert process.stderr is not None and "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
