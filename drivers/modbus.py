"""Read devices over Modbus RTU or TCP with pymodbus; every outcome becomes a Snapshot.

`ModbusBus.read` never raises for what the bus or the meter does: a missing port, a refused
connection, silence, exception responses and garbled frames all come back as a Snapshot with a
quality and an `error`. It (re)connects lazily, so a USB adapter that is unplugged and plugged
back in, or a TCP meter that reboots, is read again without restarting anything.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable

import serial
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU
from serial.rs485 import RS485Settings

from drivers.codec import decode
from drivers.plan import ReadRequest, plan_profile
from drivers.snapshot import (
    EXCEPTION,
    INVALID_RESPONSE,
    NO_CONNECTION,
    TIMEOUT,
    Snapshot,
    judged,
)
from gateway.config import Bus, Device, SerialBus

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# A TCP connection that times out this many times in a row is dropped and made afresh: the peer
# may have rebooted or a NAT may have forgotten us, and a half-open socket never recovers itself.
TCP_TIMEOUTS_BEFORE_RECONNECT = 3


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def quiet_pymodbus() -> None:
    """pymodbus logs an ERROR per timeout and per failed connect; our Snapshots already say it.
    Leave the level alone if someone configured it on purpose."""
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class _Failure(Exception):
    def __init__(self, quality: str, error: str) -> None:
        super().__init__(error)
        self.quality = quality
        self.error = error


class _TcpClient(ModbusTcpClient):
    """pymodbus's TCP client, remembering why the last connect failed."""

    def __init__(
        self, host: str, port: int, timeout: float, trace_packet: Callable[[bool, bytes], bytes]
    ) -> None:
        super().__init__(host, port=port, timeout=timeout, retries=0, trace_packet=trace_packet)
        self._peer = (host, port)
        self._connect_timeout = timeout
        self.connect_error = ""

    def connect(self) -> bool:
        if self.socket is not None:
            return True
        try:
            self.socket = socket.create_connection(self._peer, timeout=self._connect_timeout)
        except OSError as exc:
            self.connect_error = exc.strerror or str(exc) or type(exc).__name__
            return False
        return True


class ModbusBus:
    """One pymodbus client for one bus; `read` performs one device's poll.

    Serial buses carry one transaction at a time: the caller must not call `read` concurrently.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._bytes_in = 0  # bytes received during the current transaction
        self._tcp_timeouts = 0
        self._plans: dict[str, list[ReadRequest]] = {}
        self.transactions = 0  # requests the last read sent (the adaptive timeout is per request)
        self._timeout_s = bus.timeout_s
        self._silence_s = bus.silent_interval_s if isinstance(bus, SerialBus) else 0.0
        self._line_free_at = 0.0  # monotonic time the serial line has been silent long enough
        self._client: ModbusSerialClient | _TcpClient
        if isinstance(bus, SerialBus):
            self.where = f"serial port {bus.port}"
            self._client = ModbusSerialClient(
                bus.port,
                baudrate=bus.baudrate,
                parity=bus.parity,
                stopbits=bus.stopbits,
                bytesize=bus.bytesize,
                timeout=bus.timeout_s,
                retries=0,
                trace_packet=self._trace,
            )
            # pymodbus looks for the rest of a reply every 4 character times and stops only after
            # a look finds nothing new: ~7 ms lost per transaction at 9600 baud (bench/bus.py:
            # bus time 1.22x the wire minimum). Looking every character time brings it to 1.07x.
            # The attribute is private; without it we only lose that speed.
            if hasattr(self._client, "_recv_interval"):
                self._client._recv_interval = max(bus.character_bits / bus.baudrate, 0.001)
        else:
            self.where = f"{bus.host}:{bus.port}"
            self._client = _TcpClient(bus.host, bus.port, bus.timeout_s, trace_packet=self._trace)
        quiet_pymodbus()

    def read(self, device: Device, timeout_s: float | None = None) -> Snapshot:
        """Poll every register `device` is configured for, waiting at most `timeout_s` (default:
        the bus's) for each answer; never raises for bus or meter trouble."""
        self._timeout_s = self.bus.timeout_s if timeout_s is None else timeout_s
        self._client.comm_params.timeout_connect = self._timeout_s
        requests = self._plans.get(device.id)
        if requests is None:
            requests = self._plans[device.id] = plan_profile(device.profile, device.quantities)
        answers: list[tuple[ReadRequest, list[int]]] = []
        self.transactions = 0
        try:
            self._connect()
            for request in requests:
                self.transactions += 1
                answers.append((request, self._transact(device.unit, request)))
        except _Failure as failure:
            return Snapshot(device.id, now_ms(), failure.quality, error=failure.error)
        ts_ms = now_ms()
        return _snapshot(device.id, ts_ms, answers)

    def close(self) -> None:
        self._client.close()

    # -- connection --------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._client.connected:
            return
        if self._client.connect():
            self._tcp_timeouts = 0
            if isinstance(self.bus, SerialBus) and self.bus.rs485:
                self._enable_rs485(self.bus)
            return
        if isinstance(self._client, _TcpClient):
            raise _Failure(
                NO_CONNECTION, f"cannot connect to {self.where}: {self._client.connect_error}"
            )
        assert isinstance(self.bus, SerialBus)
        raise _Failure(NO_CONNECTION, serial_open_error(self.bus.port))

    def _enable_rs485(self, bus: SerialBus) -> None:
        """Let the kernel drive RTS for the transceiver's direction (Raspberry Pi RS-485 HATs)."""
        port = self._client.socket
        assert isinstance(port, serial.Serial)
        try:
            port.rs485_mode = RS485Settings(
                rts_level_for_tx=True,
                rts_level_for_rx=False,
                delay_before_tx=bus.rs485_delay_before_tx_s or None,
                delay_before_rx=bus.rs485_delay_before_rx_s or None,
            )
        except (OSError, ValueError) as exc:
            self._client.close()
            raise _Failure(
                NO_CONNECTION,
                f"{self.where} does not support the kernel's RS-485 mode ({exc}); "
                "set rs485 = false for USB adapters that switch direction themselves",
            ) from None

    def _serial_port_replaced(self) -> bool:
        """True when the device path is gone or now names another device (adapter re-plugged,
        socat restarted): the open file descriptor will never carry traffic again."""
        if not isinstance(self.bus, SerialBus) or "://" in self.bus.port:
            return False
        port = self._client.socket
        if port is None:
            return False
        try:
            opened = os.fstat(port.fileno()).st_rdev
        except (AttributeError, OSError, ValueError):
            return False
        try:
            return os.stat(self.bus.port).st_rdev != opened
        except OSError:
            return True

    # -- one request -------------------------------------------------------------------------

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            # pymodbus hands over its whole receive buffer each time, so keep the largest.
            self._bytes_in = max(self._bytes_in, len(data))
        return data

    def _transact(self, unit: int, request: ReadRequest) -> list[int]:
        if self._silence_s:
            wait = self._line_free_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            return self._request(unit, request)
        finally:
            self._line_free_at = time.monotonic() + self._silence_s

    def _request(self, unit: int, request: ReadRequest) -> list[int]:
        what = f"FC{request.function:02d} 0x{request.address:04X}+{request.count}"
        call = (
            self._client.read_holding_registers
            if request.function == 3
            else self._client.read_input_registers
        )
        self._bytes_in = 0
        try:
            response: ModbusPDU = call(request.address, count=request.count, device_id=unit)
        except ConnectionException:
            self._client.close()
            raise _Failure(
                NO_CONNECTION, f"lost connection to {self.where} reading {what}"
            ) from None
        except ModbusIOException:
            if self._bytes_in:
                raise _Failure(
                    INVALID_RESPONSE,
                    f"{self._bytes_in} bytes arrived but no valid response (bad CRC, wrong unit "
                    f"or malformed frame) reading {what}",
                ) from None
            self._after_timeout()
            raise _Failure(
                TIMEOUT,
                f"no response from unit {unit} within {self._timeout_s:g} s reading {what}",
            ) from None
        except ModbusException as exc:
            raise _Failure(INVALID_RESPONSE, f"{exc} reading {what}") from None
        except OSError as exc:
            self._client.close()
            raise _Failure(
                NO_CONNECTION, f"lost connection to {self.where} reading {what}: {exc}"
            ) from None
        except Exception as exc:  # pymodbus choking on bytes it could not parse
            self._client.close()
            raise _Failure(
                INVALID_RESPONSE,
                f"unparseable response reading {what}: {type(exc).__name__}: {exc}",
            ) from None
        self._tcp_timeouts = 0
        if response.isError():
            code = response.exception_code
            name = EXCEPTION_NAMES.get(code, "unknown exception code")
            raise _Failure(EXCEPTION, f"Modbus exception {code} ({name}) reading {what}")
        if response.function_code != request.function:
            raise _Failure(
                INVALID_RESPONSE,
                f"answer has function code {response.function_code} reading {what}",
            )
        words = list(response.registers)
        if len(words) != request.count:
            raise _Failure(INVALID_RESPONSE, f"answer has {len(words)} registers reading {what}")
        return words

    def _after_timeout(self) -> None:
        if isinstance(self._client, _TcpClient):
            self._tcp_timeouts += 1
            if self._tcp_timeouts >= TCP_TIMEOUTS_BEFORE_RECONNECT:
                self._client.close()
                self._tcp_timeouts = 0
        elif self._serial_port_replaced():
            self._client.close()
            raise _Failure(
                NO_CONNECTION, f"{self.where} vanished or now names another device (re-plugged?)"
            )


def serial_open_error(port: str) -> str:
    if "://" in port:
        return f"cannot open serial port {port}"
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return f"serial port {port} not found (adapter unplugged?)"
        if exc.errno == errno.EACCES:
            return f"cannot open serial port {port}: permission denied (user not in dialout group?)"
        return f"cannot open serial port {port}: {exc.strerror}"
    os.close(fd)
    return f"cannot open serial port {port}: in use by another program, or not a serial port"


def _snapshot(device_id: str, ts_ms: int, answers: list[tuple[ReadRequest, list[int]]]) -> Snapshot:
    return judged(
        device_id,
        ts_ms,
        (
            (r.quantity, decode(r, words[r.address - request.address :][: r.words]))
            for request, words in answers
            for r in request.registers
        ),
    )
