"""Pulse inputs: S0 / open-collector pulse outputs of meters, counted on the Pi's GPIO."""

from drivers.pulse.counter import FLAG_RATE_LIMITED, PulseCounter, pulses_to_units
from drivers.pulse.source import EmulatedPulseSource, PulseSource, PulseSourceError

__all__ = [
    "FLAG_RATE_LIMITED",
    "EmulatedPulseSource",
    "PulseCounter",
    "PulseSource",
    "PulseSourceError",
    "pulses_to_units",
]
