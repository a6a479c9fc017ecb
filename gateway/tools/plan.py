"""`cgw plan`: the requests a device's poll makes, their bytes, and the minimum wire time.

Modbus RTU wire time (FACTS.md §6): a FC03/FC04 read of n registers puts 8 request and 5 + 2n
answer characters on the line, each followed by t3.5 of silence:
T = (8 + 5 + 2n) x T_char + 2 x t3.5. The meter's own latency comes on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from drivers.dlt645.client import DEFAULT_PREAMBLE
from drivers.dlt645.frame import HEADER_LENGTH
from drivers.dlt645.identifiers import Dlt645Device, identifiers
from drivers.plan import ReadRequest, plan_profile
from gateway.config import Bus, Device, SerialBus
from gateway.tools.text import table

RTU_REQUEST_BYTES = 8  # unit, function, start (2), count (2), CRC (2)
RTU_ANSWER_OVERHEAD = 5  # unit, function, byte count, CRC (2)
MBAP_HEADER_BYTES = 7
DLT645_DI_BYTES = 4
DLT645_TRAILER = 2  # CS, 16


@dataclass(frozen=True)
class RequestLine:
    function: int
    address: int
    count: int
    quantities: tuple[str, ...]
    bytes_out: int
    bytes_in: int
    wire_ms: float | None  # None on TCP: the network, not the line, sets the pace


@dataclass(frozen=True)
class ModbusPlan:
    device: str
    bus: str
    line: str  # "9600 8E1" or "tcp host:port"
    requests: tuple[RequestLine, ...]
    total_wire_ms: float | None
    one_per_quantity_requests: int
    one_per_quantity_wire_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": "modbus", **asdict(self)}


@dataclass(frozen=True)
class Dlt645Line:
    identifier: str
    quantity: str
    bytes_out: int
    bytes_in: int
    wire_ms: float


@dataclass(frozen=True)
class Dlt645Plan:
    device: str
    bus: str
    address: str
    line: str
    requests: tuple[Dlt645Line, ...]
    total_wire_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": "dlt645", **asdict(self)}


def line_settings(bus: SerialBus) -> str:
    return f"{bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"


def _request_line(bus: Bus, request: ReadRequest) -> RequestLine:
    answer = 2 + 2 * request.count  # function, byte count, data
    if isinstance(bus, SerialBus):
        out, back = RTU_REQUEST_BYTES, RTU_ANSWER_OVERHEAD + 2 * request.count
        wire_ms: float | None = round(bus.read_wire_s(request.count) * 1000, 1)
    else:
        out, back, wire_ms = MBAP_HEADER_BYTES + 5, MBAP_HEADER_BYTES + answer, None
    return RequestLine(
        request.function,
        request.address,
        request.count,
        tuple(r.quantity for r in request.registers),
        out,
        back,
        wire_ms,
    )


def modbus_plan(device: Device, bus: Bus) -> ModbusPlan:
    requests = tuple(_request_line(bus, r) for r in plan_profile(device.profile, device.quantities))
    registers = device.profile.select(device.quantities)
    if isinstance(bus, SerialBus):
        line = line_settings(bus)
        total: float | None = round(sum(r.wire_ms or 0.0 for r in requests), 1)
        single: float | None = round(sum(bus.read_wire_s(r.words) for r in registers) * 1000, 1)
    else:
        line, total, single = f"tcp {bus.host}:{bus.port}", None, None
    return ModbusPlan(device.id, bus.id, line, requests, total, len(registers), single)


def dlt645_plan(device: Dlt645Device, bus: SerialBus) -> Dlt645Plan:
    known = identifiers()
    frame = HEADER_LENGTH + DLT645_DI_BYTES + DLT645_TRAILER
    lines = []
    for di in device.identifiers:
        out = DEFAULT_PREAMBLE + frame
        back = DEFAULT_PREAMBLE + frame + known[di].length  # many meters send the preamble too
        wire_ms = round((out + back) * bus.character_s * 1000, 1)
        lines.append(Dlt645Line(di, known[di].quantity, out, back, wire_ms))
    total = round(sum(line.wire_ms for line in lines), 1)
    return Dlt645Plan(device.id, bus.id, device.address, line_settings(bus), tuple(lines), total)


def render(plan: ModbusPlan | Dlt645Plan) -> str:
    if isinstance(plan, Dlt645Plan):
        return _render_dlt645(plan)
    rows = [
        (
            f"FC{r.function:02d}",
            f"0x{r.address:04X}",
            r.count,
            r.bytes_out,
            r.bytes_in,
            "-" if r.wire_ms is None else f"{r.wire_ms:.1f}",
            ", ".join(r.quantities),
        )
        for r in plan.requests
    ]
    headers = ("FC", "start", "registers", "bytes out", "bytes in", "wire ms", "quantities")
    lines = [
        f"device {plan.device} on bus {plan.bus} ({plan.line}): "
        f"{len(plan.requests)} requests for {plan.one_per_quantity_requests} quantities",
        table(headers, rows),
    ]
    if plan.total_wire_ms is None:
        lines.append(
            "Modbus TCP: wire time is not the limit; the meter's (or gateway's) answer time is."
        )
    else:
        lines.append(
            f"minimum wire time per poll: {plan.total_wire_ms:.1f} ms "
            "(plus each meter's answer latency)"
        )
        lines.append(
            f"one request per quantity instead: {plan.one_per_quantity_requests} requests, "
            f"{plan.one_per_quantity_wire_ms:.1f} ms"
        )
    return "\n".join(lines)


def _render_dlt645(plan: Dlt645Plan) -> str:
    rows = [
        (r.identifier, r.quantity, r.bytes_out, r.bytes_in, f"{r.wire_ms:.1f}")
        for r in plan.requests
    ]
    return "\n".join(
        [
            f"DL/T 645 device {plan.device} (address {plan.address}) on bus {plan.bus} "
            f"({plan.line}): one request per identifier",
            table(("identifier", "quantity", "bytes out", "bytes in", "wire ms"), rows),
            f"minimum wire time per poll: {plan.total_wire_ms:.1f} ms "
            "(plus the meter's answer latency, often 20-100 ms per request)",
        ]
    )


def plan_for(device: Device | Dlt645Device, bus: Bus) -> ModbusPlan | Dlt645Plan:
    if isinstance(device, Dlt645Device):
        assert isinstance(bus, SerialBus)
        return dlt645_plan(device, bus)
    return modbus_plan(device, bus)
