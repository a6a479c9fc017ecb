"""Plan a device's registers into as few Modbus read requests as the rules allow."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.profile import DEFAULT_MAX_HOLE, MAX_REGISTERS, Profile, Register

__all__ = ["MAX_REGISTERS", "ReadRequest", "plan_profile", "plan_reads"]


@dataclass(frozen=True)
class ReadRequest:
    function: int
    address: int
    count: int
    registers: tuple[Register, ...]


def plan_reads(
    registers: tuple[Register, ...],
    max_hole: int = DEFAULT_MAX_HOLE,
    max_count: int = MAX_REGISTERS,
    barriers: tuple[int, ...] = (),
) -> list[ReadRequest]:
    """Merge registers of one function code while the block stays <= max_count, holes <= max_hole
    and no block contains both `b - 1` and `b` for a barrier `b`."""
    requests: list[ReadRequest] = []
    for function in sorted({r.function for r in registers}):
        ordered = sorted((r for r in registers if r.function == function), key=lambda r: r.address)
        block: list[Register] = []
        start = end = 0
        for reg in ordered:
            reg_end = reg.address + reg.words
            new_end = max(end, reg_end)
            if (
                block
                and reg.address - end <= max_hole
                and new_end - start <= max_count
                and not any(start < b < new_end for b in barriers)
            ):
                block.append(reg)
                end = new_end
                continue
            if block:
                requests.append(ReadRequest(function, start, end - start, tuple(block)))
            block, start, end = [reg], reg.address, reg_end
        if block:
            requests.append(ReadRequest(function, start, end - start, tuple(block)))
    return requests


def plan_profile(profile: Profile, quantities: tuple[str, ...] | None = None) -> list[ReadRequest]:
    """The reads for `quantities` of `profile` (all when None), under the profile's read rules."""
    rules = profile.reads
    return plan_reads(
        profile.select(quantities), rules.max_hole, rules.max_registers, rules.barriers
    )
