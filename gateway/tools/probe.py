"""Raw Modbus requests for `cgw scan`: one register block at a time, the outcome classified."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.modbus import quiet_pymodbus
from gateway.config import Bus, SerialBus

# Exception codes a Modbus TCP gateway sends for a unit that is not behind it: not a device.
GATEWAY_EXCEPTIONS = (10, 11)


class PortUnavailable(Exception):
    """The port cannot be opened or went away: scanning cannot go on."""


@dataclass(frozen=True)
class Outcome:
    words: list[int] | None = None  # the registers, when the read succeeded
    exception: int | None = None  # the exception code, when the meter refused
    garbled: bool = False  # bytes arrived but no valid answer (wrong baud, collision)

    @property
    def present(self) -> bool:
        """A device answered: with data, or with an exception that only a device sends."""
        return self.words is not None or (
            self.exception is not None and self.exception not in GATEWAY_EXCEPTIONS
        )


SILENCE = Outcome()


class RawModbus:
    """A pymodbus client on one bus, for probing units and reading identification registers."""

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self.bus = bus
        self._bytes_in = 0
        self._silence_s = bus.silent_interval_s if isinstance(bus, SerialBus) else 0.0
        self._client: ModbusSerialClient | ModbusTcpClient
        if isinstance(bus, SerialBus):
            self._client = ModbusSerialClient(
                bus.port,
                baudrate=bus.baudrate,
                parity=bus.parity,
                bytesize=bus.bytesize,
                stopbits=bus.stopbits,
                timeout=timeout_s,
                retries=0,
                trace_packet=self._trace,
            )
        else:
            self._client = ModbusTcpClient(
                bus.host, port=bus.port, timeout=timeout_s, retries=0, trace_packet=self._trace
            )
        quiet_pymodbus()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._bytes_in = max(self._bytes_in, len(data))
        return data

    def open(self) -> None:
        if not self._client.connected and not self._client.connect():
            raise PortUnavailable(f"cannot open {_where(self.bus)}")

    def read(self, unit: int, function: int, address: int, count: int) -> Outcome:
        self.open()
        call = (
            self._client.read_holding_registers
            if function == 3
            else self._client.read_input_registers
        )
        time.sleep(self._silence_s)
        self._bytes_in = 0
        try:
            response = call(address, count=count, device_id=unit)
        except ModbusIOException:
            return Outcome(garbled=True) if self._bytes_in else SILENCE
        except ConnectionException as exc:
            self._client.close()
            raise PortUnavailable(f"lost {_where(self.bus)}: {exc}") from None
        except ModbusException:
            return Outcome(garbled=True)
        except OSError as exc:
            self._client.close()
            raise PortUnavailable(f"lost {_where(self.bus)}: {exc}") from None
        except Exception:  # pymodbus choking on bytes it could not parse
            return Outcome(garbled=True)
        if response.isError():
            return Outcome(exception=int(response.exception_code))
        words = list(response.registers)
        return Outcome(words=words) if len(words) == count else Outcome(garbled=True)

    def close(self) -> None:
        self._client.close()


def _where(bus: Bus) -> str:
    return f"serial port {bus.port}" if isinstance(bus, SerialBus) else f"{bus.host}:{bus.port}"
