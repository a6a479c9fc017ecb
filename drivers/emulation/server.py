"""Serve emulated meters over Modbus RTU (a serial device or a pty of our own) and Modbus TCP,
and emulated DL/T 645-2007 meters on the same serial lines.

A pty moves bytes instantly. A baud-accurate line (`baud_accurate=True`) behaves like the wire
instead: a request of k bytes counts as complete k character times after it arrived, the meter
answers no sooner than t3.5 of silence after that (plus its latency), and the answer's bytes are
handed over no faster than one per character time (FACTS.md 6).

An independent Modbus slave: its own CRC, RTU framing and MBAP framing, no pymodbus, so that the
gateway's driver is tested against bytes it did not produce itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import select
import socket
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import serial

from drivers.dlt645.frame import PREAMBLE_BYTE, START, Found, Frame, Incomplete, parse_at
from drivers.emulation.meter import EmulatedMeter, Reply
from gateway.config import SerialBus

if TYPE_CHECKING:  # drivers.dlt645.emulation imports this package's load model
    from drivers.dlt645.emulation import EmulatedDlt645Meter

log = logging.getLogger("cgw.emulation")

_IDLE_S = 0.2  # how often idle threads look at the stop flag
_GAP_S = 0.05  # silence that ends a frame on a serial line (generous: USB adapters batch bytes)
_MAX_RTU = 256  # longest RTU frame
_PACE_STEP_S = 0.001  # a baud-accurate line hands over its bytes in pieces this far apart


class _Wait:
    """A request may start here but has not fully arrived."""


WAIT = _Wait()


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def _rtu_request_length(buf: bytes) -> int | None:
    """Length of the request frame at the start of buf; 0 if unknown; None if more bytes needed."""
    function = buf[1]
    if function in (1, 2, 3, 4, 5, 6, 8):
        return 8
    if function in (7, 11, 12, 17):
        return 4
    if function in (15, 16):
        return 9 + buf[6] if len(buf) > 6 else None
    return 0


def _starts_frame(buf: bytearray) -> bool:
    """Whether buf can begin a request at all: a unit 0..247 and a function code 1..127."""
    return buf[0] <= 247 and 1 <= buf[1] <= 127


def _rtu_length_at_front(buf: bytearray, known_only: bool = False) -> int | _Wait | None:
    """Length of the CRC-valid request at the start of buf, WAIT if one may still be arriving,
    None if none starts here. `known_only` ignores function codes of unknown frame length."""
    if len(buf) < 2:
        return WAIT if not buf or buf[0] <= 247 else None
    if not _starts_frame(buf):
        return None
    if len(buf) < 4:
        return WAIT
    length = _rtu_request_length(bytes(buf))
    if length == 0:
        if known_only:
            return None
        # Unknown function: the frame ends wherever a CRC matches.
        found = next(
            (n for n in range(4, len(buf) + 1) if crc16(buf[: n - 2]) == _crc_at(buf, n)), None
        )
        if found is not None:
            return found
        return WAIT if len(buf) < _MAX_RTU else None
    if length is None or len(buf) < length:
        return WAIT
    return length if crc16(buf[: length - 2]) == _crc_at(buf, length) else None


def _dlt645_at_front(buf: bytearray) -> Found | _Wait | None:
    """The DL/T 645 frame at the start of buf (after FE preambles), WAIT if it is still arriving,
    None if none starts here."""
    start = 0
    while start < len(buf) and buf[start] == PREAMBLE_BYTE:
        start += 1
    if start == len(buf):
        return WAIT if start else None
    outcome = parse_at(buf, start)
    if isinstance(outcome, Found):
        return outcome
    if isinstance(outcome, Incomplete):
        return WAIT
    if buf[start] == START and not outcome.reason.startswith("no second 68"):
        log.debug("dropping a DL/T 645 frame: %s", outcome.reason)
    return None


def _complete_request_later(buf: bytearray) -> bool:
    """Whether a complete request (of known length) starts somewhere after buf's first byte."""
    for start in range(1, len(buf)):
        rest = buf[start:]
        if isinstance(_dlt645_at_front(rest), Found):
            return True
        if isinstance(_rtu_length_at_front(rest, known_only=True), int):
            return True
    return False


def split_line(buf: bytearray, final: bool) -> tuple[int, bytes] | Frame | None:
    """Take the next request off the front of buf: a Modbus RTU request as (unit, pdu) or a
    DL/T 645 frame, dropping bytes that cannot start either. Without `final` an incomplete
    request waits for more bytes; with it (the line went quiet) the incomplete start is dropped.

    Both protocols share a line at the same settings: a DL/T 645 frame starts with FE or 68 and
    has a second 68 seven bytes on; 0xFE is no Modbus unit, and a Modbus request to unit 0x68
    is told apart by its CRC and by the DL/T 645 header, checksum and end byte."""
    while buf:
        dlt = _dlt645_at_front(buf)
        if isinstance(dlt, Found):
            del buf[: dlt.end]
            return dlt.frame
        rtu = _rtu_length_at_front(buf)
        if isinstance(rtu, int):
            frame = bytes(buf[:rtu])
            del buf[:rtu]
            return frame[0], frame[1:-2]
        if WAIT in (dlt, rtu) and not final and not _complete_request_later(buf):
            return None
        del buf[0]  # resync: this byte cannot start a request
    return None


def split_rtu(buf: bytearray, final: bool) -> tuple[int, bytes] | None:
    """Like split_line, for a line that carries only Modbus RTU: DL/T 645 frames are dropped."""
    while (request := split_line(buf, final)) is not None:
        if isinstance(request, tuple):
            return request
    return None


def _crc_at(buf: bytearray, length: int) -> int:
    return int.from_bytes(buf[length - 2 : length], "little")


@dataclass(frozen=True)
class LineTiming:
    """How long things take on a serial line with these settings (FACTS.md 6)."""

    line: SerialBus

    @classmethod
    def of(
        cls, baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8
    ) -> LineTiming:
        return cls(SerialBus("line", "", baudrate, parity, bytesize, stopbits))

    @property
    def character_s(self) -> float:
        return self.line.character_s

    @property
    def silence_s(self) -> float:
        return self.line.silent_interval_s

    def wire_s(self, length: int) -> float:
        return length * self.character_s

    def read_transaction_s(self, registers: int) -> float:
        return self.line.read_wire_s(registers)


class _Pacer:
    """Keeps one line's bytes to the speed of the wire. `busy_until` is the monotonic time the
    last byte seen or sent so far has fully crossed the line."""

    def __init__(self, timing: LineTiming) -> None:
        self.timing = timing
        self.busy_until = 0.0
        self._piece = max(1, int(_PACE_STEP_S / timing.character_s))

    def received(self, length: int) -> None:
        """`length` bytes just arrived (all at once, as a pty delivers them): on the wire they
        take their character times, starting now or after what is still crossing."""
        self.busy_until = max(time.monotonic(), self.busy_until) + self.timing.wire_s(length)

    def send(self, channel: _Channel, wire: bytes, stop: threading.Event) -> None:
        """Hand `wire` over piece by piece, each piece when its last byte would have arrived."""
        start = max(time.monotonic(), self.busy_until)
        for offset in range(0, len(wire), self._piece):
            piece = wire[offset : offset + self._piece]
            wait = start + self.timing.wire_s(offset + len(piece)) - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # at most one piece's time: _PACE_STEP_S
            if stop.is_set():
                return
            channel.write(piece)
        self.busy_until = start + self.timing.wire_s(len(wire))


class _Channel(Protocol):
    name: str

    def read(self, timeout: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _PtyChannel:
    """The master side of a pty pair we created; the slave side is what the gateway opens."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline: bytes pass as they are
        self.name = os.ttyname(self.slave)

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, 4096) if ready else b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def close(self) -> None:
        # The slave stays open until here so that the master never sees a hang-up in between.
        os.close(self.master)
        os.close(self.slave)


class _SerialChannel:
    def __init__(self, path: str, baudrate: int, parity: str, stopbits: int, bytesize: int):
        self.name = path
        self.port = serial.Serial(
            path,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            timeout=_GAP_S,
        )

    def read(self, timeout: float) -> bytes:
        # The port's own timeout (the frame gap) bounds the wait; `timeout` is only a hint here.
        first = bytes(self.port.read(1))
        return first + bytes(self.port.read(self.port.in_waiting)) if first else b""

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def close(self) -> None:
        self.port.close()


class EmulatorServer:
    """Serves `meters` (by unit id) on RTU lines and TCP ports, each endpoint in its own thread,
    and `dlt645_meters` (by address) on the same serial lines, as on a mixed RS-485 bus.

    Requests for units or addresses it does not serve, and broadcasts (unit 0, address 99..99),
    get no answer, as on RS-485. Several DL/T 645 meters answering the wildcard address collide.
    """

    def __init__(
        self,
        meters: Iterable[EmulatedMeter] = (),
        dlt645_meters: Iterable[EmulatedDlt645Meter] = (),
        *,
        noise_seed: int = 0,
    ) -> None:
        self.meters: dict[int, EmulatedMeter] = {}
        for meter in meters:
            if meter.unit in self.meters:
                raise ValueError(f"two meters with unit {meter.unit}")
            self.meters[meter.unit] = meter
        self.dlt645_meters: dict[str, EmulatedDlt645Meter] = {}
        for dlt_meter in dlt645_meters:
            if dlt_meter.address in self.dlt645_meters:
                raise ValueError(f"two DL/T 645 meters with address {dlt_meter.address}")
            self.dlt645_meters[dlt_meter.address] = dlt_meter
        self.failures: list[str] = []  # endpoints that stopped on an error (e.g. adapter removed)
        # Line noise: the share of answers on serial lines that get one bit flipped on the way.
        self.noise = 0.0
        self.noisy_answers = 0
        self._noise_rng = random.Random(noise_seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[socket.socket] = []
        self._links: list[Path] = []
        self._lock = threading.Lock()

    # -- endpoints ---------------------------------------------------------------------------

    def serve_serial(
        self,
        path: str,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        *,
        baud_accurate: bool = False,
    ) -> None:
        """Answer RTU and DL/T 645 on an existing serial device or pty; OSError if it cannot be
        opened. `baud_accurate` paces the line to its settings (needed on a pty, whose baud rate
        is fiction; a real serial port paces itself)."""
        channel = _SerialChannel(path, baudrate, parity, stopbits, bytesize)
        pacer = (
            _Pacer(LineTiming.of(baudrate, parity, stopbits, bytesize)) if baud_accurate else None
        )
        self._spawn(lambda: self._serve_rtu(channel, pacer), f"rtu {path}")

    def start_pty(
        self,
        link: str | Path | None = None,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        *,
        baud_accurate: bool = False,
    ) -> str:
        """Create a pty pair, answer RTU on one end and return the other end's path for the
        gateway; with `link`, also point a symlink there (replacing an older symlink). The line
        settings matter only with `baud_accurate`, which paces the line to them."""
        pacer = (
            _Pacer(LineTiming.of(baudrate, parity, stopbits, bytesize)) if baud_accurate else None
        )
        channel = _PtyChannel()
        if link is not None:
            link = Path(link)
            try:
                if link.is_symlink():
                    link.unlink()
                link.symlink_to(channel.name)
            except OSError:
                channel.close()
                raise
            self._links.append(link)
        self._spawn(lambda: self._serve_rtu(channel, pacer), f"pty {channel.name}")
        return channel.name

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Answer Modbus TCP on host:port (0 picks a free port); returns the port."""
        listener = socket.create_server((host, port))
        listener.settimeout(_IDLE_S)
        with self._lock:
            self._closers.append(listener)
        self._spawn(lambda: self._accept(listener), f"tcp {host}:{port}")
        return int(listener.getsockname()[1])

    def stop(self, timeout: float = 2.0) -> None:
        """Stop answering, drop TCP connections, close ports and remove our symlinks."""
        self._stop.set()
        with self._lock:
            for sock in self._closers:
                _shut(sock)  # wakes the thread blocked on it, which then closes it
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        for link in self._links:
            if link.is_symlink():
                link.unlink()

    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving -----------------------------------------------------------------------------

    def _spawn(self, run: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=run, name=f"emulator {name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _reply(self, unit: int, pdu: bytes) -> Reply | None:
        """The addressed meter's reply, None for silence (no such meter, or it keeps quiet)."""
        meter = self.meters.get(unit)
        if meter is None:
            return None
        reply = meter.respond(pdu)
        return None if reply.pdu is None else reply

    def _answer(self, unit: int, pdu: bytes) -> Reply | None:
        """The reply, once its delay has passed: a slow meter holds up its TCP connection."""
        reply = self._reply(unit, pdu)
        if reply is None or (reply.delay_s and self._stop.wait(reply.delay_s)):
            return None
        return reply

    def _answer_dlt645(self, request: Frame) -> tuple[bytes, float] | None:
        """The bytes the addressed DL/T 645 meters put on the line and after what delay; None
        for silence."""
        answers = [
            meter.respond(request)
            for meter in self.dlt645_meters.values()
            if meter.addressed_by(request)
        ]
        wires = [a.wire for a in answers if a.wire is not None]
        if not wires:
            return None
        delay_s = max(a.delay_s for a in answers)
        return (wires[0] if len(wires) == 1 else _collide(wires)), delay_s

    def _deliver(
        self, channel: _Channel, wire: bytes, delay_s: float, pacer: _Pacer | None
    ) -> None:
        """Put an answer on the line `delay_s` after the request: on a baud-accurate line,
        counted from the end of the request and its t3.5 silence, and at the line's speed.
        Meters answer independently: one that takes its time does not hold up the requests that
        follow, and its late answer goes on the line whatever is on it then, as on RS-485."""
        if pacer is not None:
            delay_s += max(0.0, pacer.busy_until + pacer.timing.silence_s - time.monotonic())
        if self.noise and self._noise_rng.random() < self.noise:
            wire = _flip_a_bit(wire, self._noise_rng)
            self.noisy_answers += 1
        if delay_s <= 0:
            self._send(channel, wire, pacer)
            return
        timer = threading.Timer(delay_s, self._send_late, (channel, wire, pacer))
        timer.daemon = True
        timer.start()

    def _send(self, channel: _Channel, wire: bytes, pacer: _Pacer | None) -> None:
        if pacer is None:
            channel.write(wire)
        else:
            pacer.send(channel, wire, self._stop)

    def _send_late(self, channel: _Channel, wire: bytes, pacer: _Pacer | None) -> None:
        if self._stop.is_set():
            return
        # The line may have gone meanwhile (unplugged, stopped): its own thread reports that.
        with contextlib.suppress(OSError, serial.SerialException, termios.error):
            self._send(channel, wire, pacer)

    def _serve_rtu(self, channel: _Channel, pacer: _Pacer | None = None) -> None:
        buf = bytearray()
        try:
            while not self._stop.is_set():
                data = channel.read(_GAP_S if buf else _IDLE_S)
                if data and pacer is not None:
                    pacer.received(len(data))
                buf += data
                while (request := split_line(buf, final=not data)) is not None:
                    if isinstance(request, Frame):
                        answer = self._answer_dlt645(request)
                        if answer is not None:
                            self._deliver(channel, *answer, pacer)
                        continue
                    unit, pdu = request
                    reply = self._reply(unit, pdu) if unit else None
                    if reply is not None and reply.pdu is not None:
                        self._deliver(channel, _rtu_wire(unit, reply), reply.delay_s, pacer)
        except (OSError, serial.SerialException, termios.error) as exc:
            # termios.error: the line vanished under an open port (adapter unplugged, socat gone)
            if not self._stop.is_set():
                log.error("emulator on %s stopped: %s", channel.name, exc)
                self.failures.append(f"{channel.name}: {exc}")
        finally:
            channel.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break  # closed by stop()
            conn.settimeout(_IDLE_S)
            with self._lock:
                if self._stop.is_set():
                    conn.close()
                    break
                self._closers.append(conn)
            self._spawn(functools.partial(self._serve_tcp_connection, conn), "tcp connection")
        listener.close()

    def _serve_tcp_connection(self, conn: socket.socket) -> None:
        buf = bytearray()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                buf += data
                while len(buf) >= 8:
                    tid, protocol, length, unit = struct.unpack(">HHHB", buf[:7])
                    if protocol != 0 or not 2 <= length <= 254:
                        return  # not Modbus TCP: drop the connection as real devices do
                    if len(buf) < 6 + length:
                        break
                    pdu = bytes(buf[7 : 6 + length])
                    del buf[: 6 + length]
                    reply = self._answer(unit, pdu)
                    if reply is not None and reply.pdu is not None:
                        conn.sendall(_mbap(tid, unit, reply))
        except OSError:
            pass  # peer went away or stop() shut the socket
        finally:
            with self._lock:
                if conn in self._closers:
                    self._closers.remove(conn)
            conn.close()


def _rtu_wire(unit: int, reply: Reply) -> bytes:
    """The bytes an RTU reply puts on the line, faults included."""
    assert reply.pdu is not None
    if reply.raw:
        return reply.pdu
    frame = rtu_frame(unit if reply.unit is None else reply.unit, reply.pdu)
    if reply.corrupt:
        frame = frame[:-2] + bytes([frame[-2] ^ 0xFF, frame[-1] ^ 0x5A])
    return frame


def _mbap(tid: int, unit: int, reply: Reply) -> bytes:
    assert reply.pdu is not None
    if reply.raw:
        return reply.pdu
    pdu = reply.pdu
    if reply.corrupt and len(pdu) > 2:
        # A byte count that promises more data than the frame carries: a malformed response.
        pdu = pdu[:1] + bytes([(pdu[1] + 2) & 0xFF]) + pdu[2:]
    answering = unit if reply.unit is None else reply.unit
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, answering) + pdu


def _flip_a_bit(wire: bytes, rng: random.Random) -> bytes:
    """`wire` with one bit flipped, as line noise does: the CRC or checksum must catch it."""
    spoilt = bytearray(wire)
    spoilt[rng.randrange(len(spoilt))] ^= 1 << rng.randrange(8)
    return bytes(spoilt)


def _collide(wires: list[bytes]) -> bytes:
    """What a receiver makes of several meters talking at once: RS-485 drivers fight, and a
    driven 0 wins over a 1 on each bit, so the result is the bitwise AND (longest frame wins
    the tail)."""
    length = max(len(w) for w in wires)
    padded = [w.ljust(length, b"\xff") for w in wires]
    return bytes(
        functools.reduce(lambda a, b: a & b, column) for column in zip(*padded, strict=True)
    )


def _shut(sock: socket.socket) -> None:
    # OSError: not connected (a listener on some systems) or already gone.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
