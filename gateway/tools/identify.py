"""Name the model of a Modbus device found by `cgw scan`: first by the identification registers
of the shipped profiles that declare one, then by which profiles' register maps read plausibly."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.codec import decode
from drivers.plan import plan_profile
from drivers.profile import Profile, load_shipped_profile, shipped_profiles
from drivers.vocabulary import vocabulary
from gateway.tools.probe import RawModbus

# Readings that say "this is an electricity meter on a live grid", whatever the profile allows.
MAINS_VOLTS = (80.0, 500.0)
MAINS_HZ = (45.0, 65.0)


@dataclass(frozen=True)
class Identification:
    profile: str | None  # None: unknown Modbus device
    how: str


def identify(raw: RawModbus, unit: int, profiles: list[Profile] | None = None) -> Identification:
    candidates = (
        profiles if profiles is not None else [load_shipped_profile(n) for n in shipped_profiles()]
    )
    by_register = _by_identify_register(raw, unit, candidates)
    if by_register is not None:
        return by_register
    return _by_plausibility(raw, unit, candidates)


def _by_identify_register(
    raw: RawModbus, unit: int, profiles: list[Profile]
) -> Identification | None:
    read: dict[tuple[int, int, int], list[int] | None] = {}
    for profile in profiles:
        ident = profile.identify
        if ident is None:
            continue
        key = (ident.function, ident.address, ident.words)
        if key not in read:
            read[key] = raw.read(unit, *key).words
        words = read[key]
        if words is not None and ident.matches(words):
            return Identification(
                profile.name,
                f"identification register 0x{ident.address:04X} = {ident.value(words)!r}",
            )
    return None


def plausibility_score(raw: RawModbus, unit: int, profile: Profile) -> int | None:
    """How many of the profile's quantities read as plausible non-zero values; None when the map
    does not fit (a refused block, a value out of range, no mains voltage or frequency)."""
    known = vocabulary()
    score = 0
    for request in plan_profile(profile):
        words = raw.read(unit, request.function, request.address, request.count).words
        if words is None:
            return None
        for register in request.registers:
            start = register.address - request.address
            value = decode(register, words[start : start + register.words])
            if value is None or not known[register.quantity].plausible(value):
                return None
            unit_name = known[register.quantity].unit
            mains = MAINS_VOLTS if unit_name == "V" else MAINS_HZ if unit_name == "Hz" else None
            if mains is not None and value != 0 and not mains[0] <= value <= mains[1]:
                return None
            score += value != 0
    return score


def _by_plausibility(raw: RawModbus, unit: int, profiles: list[Profile]) -> Identification:
    scores = {p.name: plausibility_score(raw, unit, p) for p in profiles}
    fitting = sorted(((s, n) for n, s in scores.items() if s), key=lambda sn: (-sn[0], sn[1]))
    if not fitting:
        return Identification(None, "no shipped profile's registers read plausibly")
    best_score, best = fitting[0]
    others = [n for s, n in fitting[1:]]
    how = f"register map reads plausibly ({best_score} quantities)"
    if others:
        how += f"; also fits {', '.join(others[:3])}"
    return Identification(best, how)
