"""Planning a device's registers into Modbus requests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.plan import MAX_REGISTERS, plan_profile, plan_reads
from drivers.profile import REGISTER_WORDS, Register, load_shipped_profile


def f32(address: int, function: int = 4, name: str = "") -> Register:
    return Register(name or f"q{address}", function, address, "f32")


def shape(requests: list) -> list[tuple[int, int, int]]:
    return [(r.function, r.address, r.count) for r in requests]


def test_sdm630_plan() -> None:
    requests = plan_reads(load_shipped_profile("eastron_sdm630").registers)
    # 0x0000-0x0011 are contiguous; 0x0034 and 0x0046.. are more than 7 registers away.
    assert shape(requests) == [(4, 0x0000, 18), (4, 0x0034, 2), (4, 0x0046, 6)]


def test_dtsu666_plan() -> None:
    requests = plan_reads(load_shipped_profile("chint_dtsu666").registers)
    assert shape(requests) == [
        (3, 0x101E, 2),
        (3, 0x1028, 2),
        (3, 0x2006, 20),
        (3, 0x202A, 2),
        (3, 0x2044, 2),
    ]


def test_hole_of_max_hole_merges_and_one_more_splits() -> None:
    assert shape(plan_reads((f32(0), f32(2 + 7)))) == [(4, 0, 11)]
    assert shape(plan_reads((f32(0), f32(2 + 8)))) == [(4, 0, 2), (4, 10, 2)]
    assert shape(plan_reads((f32(0), f32(2 + 3)), max_hole=2)) == [(4, 0, 2), (4, 5, 2)]


def test_function_codes_never_share_a_request() -> None:
    requests = plan_reads((f32(0, 3), f32(2, 4), f32(4, 3)))
    assert shape(requests) == [(3, 0, 6), (4, 2, 2)]
    assert [r.quantity for r in requests[0].registers] == ["q0", "q4"]


def test_long_runs_split_at_125_registers() -> None:
    registers = tuple(f32(a) for a in range(0, 400, 2))
    requests = plan_reads(registers)
    assert shape(requests) == [(4, 0, 124), (4, 124, 124), (4, 248, 124), (4, 372, 28)]


def test_empty_selection_plans_nothing() -> None:
    assert plan_reads(()) == []


@st.composite
def register_sets(draw: st.DrawFn) -> tuple[Register, ...]:
    count = draw(st.integers(1, 60))
    registers = []
    for i in range(count):
        rtype = draw(st.sampled_from(sorted(REGISTER_WORDS)))
        # Clustered addresses so that merging, holes and the 125 limit all come up.
        base = draw(st.sampled_from([0, 0x1000, 0xFF00, 0xFFFF - REGISTER_WORDS[rtype] + 1]))
        address = min(base + draw(st.integers(0, 300)), 0x10000 - REGISTER_WORDS[rtype])
        registers.append(Register(f"q{i}", draw(st.sampled_from([3, 4])), address, rtype))
    return tuple(registers)


@given(register_sets(), st.integers(0, 20))
def test_every_register_is_read_exactly_once_within_limits(
    registers: tuple[Register, ...], max_hole: int
) -> None:
    requests = plan_reads(registers, max_hole=max_hole)
    covering = {r: 0 for r in registers}
    for request in requests:
        assert 1 <= request.count <= MAX_REGISTERS
        assert request.address + request.count <= 0x10000
        ordered = sorted(request.registers, key=lambda r: r.address)
        # The request starts at its first register and ends with its furthest one: no waste.
        assert request.address == ordered[0].address
        assert request.address + request.count == max(r.address + r.words for r in ordered)
        end = ordered[0].address
        for register in ordered:
            assert register.function == request.function
            assert request.address <= register.address
            assert register.address + register.words <= request.address + request.count
            assert register.address - end <= max_hole
            end = max(end, register.address + register.words)
            covering[register] += 1
    assert all(times == 1 for times in covering.values())


def test_barrier_splits_a_block_that_would_span_it() -> None:
    registers = (f32(0), f32(2), f32(4))
    assert shape(plan_reads(registers, barriers=(4,))) == [(4, 0, 4), (4, 4, 2)]
    # A barrier at a block's first address does not split it.
    assert shape(plan_reads(registers, barriers=(0,))) == [(4, 0, 6)]


def test_profile_rules_drive_the_plan() -> None:
    em24 = load_shipped_profile("carlo_gavazzi_em24")
    assert em24.reads.max_registers == 11
    assert all(r.count <= 11 for r in plan_profile(em24))
    assert len(plan_profile(em24)) > len(plan_reads(em24.registers))


@given(register_sets(), st.integers(0, 20), st.integers(2, 125), st.lists(st.integers(1, 0xFFFF)))
def test_barriers_and_block_limits_are_honoured(
    registers: tuple[Register, ...], max_hole: int, max_count: int, barriers: list[int]
) -> None:
    # Registers that straddle a barrier cannot be read at all; profiles reject them at load time.
    fenced = tuple(
        r
        for r in registers
        if r.words <= max_count and not any(r.address < b < r.address + r.words for b in barriers)
    )
    requests = plan_reads(fenced, max_hole, max_count, tuple(barriers))
    planned = [r for q in requests for r in q.registers]
    assert len(planned) == len(fenced) and set(planned) == set(fenced)
    for request in requests:
        assert 1 <= request.count <= max_count
        end = request.address + request.count
        assert not any(request.address < b < end for b in barriers)
