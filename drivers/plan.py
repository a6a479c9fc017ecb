"""Plan a device's registers into as few Modbus read requests as the rules allow."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.profile import Register

MAX_REGISTERS = 125  # Modbus limit for FC03/FC04 (FACTS.md section 6)


@dataclass(frozen=True)
class ReadRequest:
    function: int
    address: int
    count: int
    registers: tuple[Register, ...]


def plan_reads(
    registers: tuple[Register, ...], max_hole: int = 7, max_count: int = MAX_REGISTERS
) -> list[ReadRequest]:
    """Merge registers of one function code while the block stays <= max_count and holes <= max_hole."""
    requests: list[ReadRequest] = []
    for function in sorted({r.function for r in registers}):
        ordered = sorted((r for r in registers if r.function == function), key=lambda r: r.address)
        block: list[Register] = []
        start = end = 0
        for reg in ordered:
            reg_end = reg.address + reg.words
            if block and reg.address - end <= max_hole and max(end, reg_end) - start <= max_count:
                block.append(reg)
                end = max(end, reg_end)
                continue
            if block:
                requests.append(ReadRequest(function, start, end - start, tuple(block)))
            block, start, end = [reg], reg.address, reg_end
        if block:
            requests.append(ReadRequest(function, start, end - start, tuple(block)))
    return requests
