"""Read DL/T 645-2007 meters over a serial line; every outcome of a device poll becomes a Snapshot.

`Dlt645Link` speaks the protocol over a port someone else opened (so a Modbus client can share
the RS-485 line); `Dlt645Bus` owns a port for a bus of its own, opening it lazily and again after
the adapter vanished, like drivers/modbus.py's ModbusBus.
"""

from __future__ import annotations

import logging
import os
import termios
import time
from collections.abc import Iterable
from typing import Protocol

import serial

from drivers.dlt645.frame import (
    Frame,
    FrameError,
    FrameScanner,
    check_reply,
    decode_address,
    decode_di,
    describe_error,
    encode_di,
    follow_up_request,
    read_address_request,
    read_request,
)
from drivers.dlt645.identifiers import Dlt645Device, Identifier, identifiers
from drivers.modbus import now_ms, serial_open_error
from drivers.snapshot import (
    EXCEPTION,
    INVALID_RESPONSE,
    NO_CONNECTION,
    TIMEOUT,
    Snapshot,
    judged,
)
from gateway.config import SerialBus

log = logging.getLogger("cgw.dlt645")

DEFAULT_PREAMBLE = 4  # FE bytes that wake a meter's UART before each request
MAX_FOLLOW_UPS = 64  # a meter that keeps saying "more follows" is broken, not generous


class SerialLike(Protocol):
    """The part of pyserial's Serial that the link uses."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    @property
    def in_waiting(self) -> int: ...


class Dlt645Failure(Exception):
    """A read that produced no value; `quality` is the Snapshot quality it stands for."""

    quality = INVALID_RESPONSE

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class Dlt645Timeout(Dlt645Failure):
    quality = TIMEOUT


class Dlt645InvalidReply(Dlt645Failure):
    quality = INVALID_RESPONSE


class Dlt645ErrorReply(Dlt645Failure):
    quality = EXCEPTION

    def __init__(self, error: str, error_byte: int) -> None:
        super().__init__(error)
        self.error_byte = error_byte


class Dlt645Link:
    """Transactions with DL/T 645 meters over an open serial port, one at a time.

    The port's own `timeout` bounds each wait for bytes; `timeout_s` bounds the whole wait for a
    reply. Replies with or without FE preambles are accepted; echoes of our own request (some
    half-duplex adapters hear themselves) and frames not answering it are skipped.
    """

    def __init__(
        self, port: SerialLike, timeout_s: float = 0.5, preamble: int = DEFAULT_PREAMBLE
    ) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.preamble = preamble

    # -- protocol operations -----------------------------------------------------------------

    def read(self, address: str, di: str) -> bytes:
        """The data of identifier `di` (plain bytes, follow-up frames appended)."""
        request = read_request(address, di)
        reply = self._transact(request, f"reading {di} from {request.address}")
        data = self._payload(reply, di, f"reading {di} from {request.address}")
        sequence = 0
        while reply.has_follow_up:
            sequence += 1
            if sequence > MAX_FOLLOW_UPS:
                raise Dlt645InvalidReply(
                    f"invalid DL/T 645 reply reading {di} from {request.address}: "
                    f"more than {MAX_FOLLOW_UPS} follow-up frames"
                )
            follow = follow_up_request(address, di, sequence)
            what = f"reading follow-up frame {sequence} of {di} from {request.address}"
            reply = self._transact(follow, what)
            part = self._payload(reply, di, what)
            if not part or part[-1] != sequence:
                raise Dlt645InvalidReply(
                    f"invalid DL/T 645 reply {what}: frame sequence number missing or wrong"
                )
            data += part[:-1]
        return data

    def read_address(self) -> str:
        """The address of the one meter on the line (wildcard address AA..AA)."""
        reply = self._transact(read_address_request(), "reading the address (wildcard)")
        if reply.is_error:
            raise self._error_reply(reply, "reading the address")
        if len(reply.data) != 6:
            raise Dlt645InvalidReply(
                f"invalid DL/T 645 reply reading the address: {len(reply.data)} data bytes, "
                "expected 6"
            )
        return decode_address(reply.data)

    def read_device(self, device_id: str, address: str, dis: Iterable[str]) -> Snapshot:
        """Read every identifier of one meter into a Snapshot; never raises for bus trouble."""
        known = identifiers()
        answers: list[tuple[Identifier, bytes]] = []
        try:
            for di in dis:
                identifier = known[di]
                data = self.read(address, di)
                if len(data) != identifier.length:
                    raise Dlt645InvalidReply(
                        f"invalid DL/T 645 reply reading {di} from {address}: "
                        f"{len(data)} data bytes, expected {identifier.length}"
                    )
                answers.append((identifier, data))
        except Dlt645Failure as failure:
            return Snapshot(device_id, now_ms(), failure.quality, error=failure.error)
        return _snapshot(device_id, now_ms(), answers)

    # -- one transaction ---------------------------------------------------------------------

    def _transact(self, request: Frame, what: str) -> Frame:
        self.port.reset_input_buffer()
        self.port.write(request.encode(self.preamble))
        return self._receive(request, what)

    def _receive(self, request: Frame, what: str) -> Frame:
        scanner = FrameScanner()
        rejected: list[str] = []
        echoed = 0  # bytes that were our own request coming back
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            chunk = self.port.read(max(1, self.port.in_waiting))
            if not chunk:
                if scanner.received > echoed:
                    break  # the line went quiet after some bytes: nothing more is coming
                continue
            for frame in scanner.feed(bytes(chunk)):
                if frame == request:
                    echoed += len(request.encode(self.preamble))  # heard ourselves
                    continue
                try:
                    check_reply(frame, request)
                except FrameError as exc:
                    rejected.append(exc.reason)
                    continue
                return frame
        if scanner.received <= echoed:
            raise Dlt645Timeout(
                f"no response from DL/T 645 meter {request.address} within {self.timeout_s:g} s "
                f"{what}"
            )
        reasons = scanner.rejections + rejected
        pending = scanner.pending()
        if pending:
            reasons.append(pending)
        reason = reasons[-1] if reasons else "no DL/T 645 frame in them"
        log.debug("%d bytes but no valid reply %s: %s", scanner.received, what, reasons)
        raise Dlt645InvalidReply(
            f"invalid DL/T 645 reply {what}: {scanner.received} bytes arrived, {reason}"
        )

    def _payload(self, reply: Frame, di: str, what: str) -> bytes:
        """The data after the identifier echo; raises for error replies and wrong echoes."""
        if reply.is_error:
            raise self._error_reply(reply, di)
        if len(reply.data) < 4 or reply.data[:4] != encode_di(di):
            echoed = decode_di(reply.data[:4]) if len(reply.data) >= 4 else "nothing"
            raise Dlt645InvalidReply(
                f"invalid DL/T 645 reply {what}: identifier echo {echoed}, expected {di}"
            )
        return reply.data[4:]

    @staticmethod
    def _error_reply(reply: Frame, subject: str) -> Dlt645ErrorReply:
        # The standard's error reply carries just the error byte; some meters put the
        # identifier before it, so the byte is taken from the end.
        error_byte = reply.data[-1] if reply.data else 0
        return Dlt645ErrorReply(
            f"DL/T 645 error reply: {describe_error(error_byte)} ({subject})", error_byte
        )


def _snapshot(device_id: str, ts_ms: int, answers: list[tuple[Identifier, bytes]]) -> Snapshot:
    return judged(device_id, ts_ms, ((i.quantity, i.decode(data)) for i, data in answers))


class Dlt645Bus:
    """One serial port for one bus of DL/T 645 meters; `read` performs one device's poll.

    Like ModbusBus: the port is opened on first use and again after it failed, and a port
    whose device node vanished or now names another device is dropped. Not thread-safe: one
    transaction at a time.
    """

    def __init__(self, bus: SerialBus, preamble: int = DEFAULT_PREAMBLE) -> None:
        self.bus = bus
        self.preamble = preamble
        self.where = f"serial port {bus.port}"
        self._port: serial.Serial | None = None

    def read(self, device: Dlt645Device) -> Snapshot:
        try:
            link = self._link()
        except OSError:
            return Snapshot(
                device.id, now_ms(), NO_CONNECTION, error=serial_open_error(self.bus.port)
            )
        try:
            snapshot = link.read_device(device.id, device.address, device.identifiers)
        except (OSError, serial.SerialException, termios.error) as exc:
            # termios.error: the pty or USB adapter went away under an open port.
            self.close()
            reason = exc.args[-1] if isinstance(exc, termios.error) and exc.args else exc
            return Snapshot(
                device.id,
                now_ms(),
                NO_CONNECTION,
                error=f"lost connection to {self.where}: {reason}",
            )
        if snapshot.quality == TIMEOUT and self._port_replaced():
            self.close()
            return Snapshot(
                device.id,
                now_ms(),
                NO_CONNECTION,
                error=f"{self.where} vanished or now names another device (re-plugged?)",
            )
        return snapshot

    def read_address(self) -> str:
        """Discover the address of the lone meter on this bus; raises Dlt645Failure or OSError."""
        return self._link().read_address()

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (OSError, serial.SerialException) as exc:
                log.debug("closing %s: %s", self.where, exc)

    def _link(self) -> Dlt645Link:
        if self._port is None:
            try:
                self._port = serial.Serial(
                    self.bus.port,
                    baudrate=self.bus.baudrate,
                    parity=self.bus.parity,
                    bytesize=self.bus.bytesize,
                    stopbits=self.bus.stopbits,
                    timeout=self.bus.timeout_s,
                )
            except (ValueError, serial.SerialException) as exc:
                raise OSError(str(exc)) from None
        return Dlt645Link(self._port, timeout_s=self.bus.timeout_s, preamble=self.preamble)

    def _port_replaced(self) -> bool:
        if self._port is None or "://" in self.bus.port:
            return False
        try:
            opened = os.fstat(self._port.fileno()).st_rdev
        except (AttributeError, OSError, ValueError):
            return False
        try:
            return os.stat(self.bus.port).st_rdev != opened
        except OSError:
            return True
