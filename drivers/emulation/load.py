"""A plausible, deterministic, changing electrical load, as one three-phase meter would measure it.

Everything is a function of time and the seed except the energy counters, which are integrated
from the measured power each time the model is sampled, so energy over any window equals the mean
power over that window times its length (what a real meter's counters do).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable

TWO_PI = 2 * math.pi
PHASES = (1, 2, 3)
PULSE_CHANNELS = tuple(range(1, 9))
# Integration step for the energy counters: fine enough that the trapezoid rule is exact to ~1e-6
# for a load that changes over minutes, bounded so that a clock jumping by days stays cheap.
_STEP_S = 1.0
_MAX_STEPS = 4000


class _Wave:
    """A sinusoid with a seeded period and phase."""

    def __init__(self, rng: random.Random, amplitude: float, period_low: float, period_high: float):
        self.amplitude = amplitude
        self.omega = TWO_PI / rng.uniform(period_low, period_high)
        self.phase = rng.uniform(0, TWO_PI)

    def __call__(self, t: float) -> float:
        return self.amplitude * math.sin(self.omega * t + self.phase)


class LoadModel:
    """The load seen by one meter; `sample()` returns every vocabulary quantity it can measure.

    `reversed_ct` (a phase 1, 2 or 3, or several) makes the meter see that phase's power negative,
    as with a current transformer mounted backwards; with all three the meter counts export.
    `import_kwh`/`export_kwh` set the counters' starting values (default: seeded, export 0).
    `clock` returns seconds (time.time by default); tests and rigs may run it faster.
    `shape`, when set (at any time), scales the load at each moment: a load profile (shifts,
    machines starting); its factor must stay above 0.
    """

    def __init__(
        self,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        reversed_ct: int | tuple[int, ...] | None = None,
        import_kwh: float | None = None,
        export_kwh: float | None = None,
    ) -> None:
        reversed_phases = (reversed_ct,) if isinstance(reversed_ct, int) else reversed_ct or ()
        if any(phase not in PHASES for phase in reversed_phases):
            raise ValueError(f"reversed_ct phases must be 1, 2 or 3, not {reversed_ct!r}")
        rng = random.Random(seed)
        self.clock = clock
        self.shape: Callable[[float], float] | None = None
        self.reversed_ct = frozenset(reversed_phases)
        self.base_w = rng.uniform(1500.0, 8000.0)
        self._swing = _Wave(rng, 0.3 * self.base_w, 120.0, 300.0)
        self._noise = [_Wave(rng, 0.02 * self.base_w, 3.0, 17.0) for _ in range(3)]
        self._share = [_Wave(rng, 0.04, 60.0, 240.0) for _ in PHASES]
        self._volts = [(rng.uniform(-2.0, 2.0), _Wave(rng, 1.5, 20.0, 90.0)) for _ in PHASES]
        self._freq = _Wave(rng, 0.04, 30.0, 120.0)
        self._pf = _Wave(rng, 0.04, 60.0, 200.0)
        self._lock = threading.Lock()
        self._energy = {
            "active_energy_import_kwh": (
                rng.uniform(1000.0, 50000.0) if import_kwh is None else float(import_kwh)
            ),
            "active_energy_export_kwh": 0.0 if export_kwh is None else float(export_kwh),
            "reactive_energy_import_kvarh": rng.uniform(100.0, 5000.0),
            "reactive_energy_export_kvarh": 0.0,
        }
        # Drawn after everything above so that the electrical values stay what they were.
        self._water_m3h = rng.uniform(2.0, 20.0)
        self._water_wave = _Wave(rng, 0.2 * self._water_m3h, 60.0, 300.0)
        self._gas_m3h = rng.uniform(5.0, 50.0)
        self._gas_wave = _Wave(rng, 0.3 * self._gas_m3h, 120.0, 600.0)
        self._gas_celsius = rng.uniform(10.0, 25.0)
        self._gas_kpa = rng.uniform(102.0, 110.0)  # absolute, low-pressure distribution
        self._pulse_hz = [rng.uniform(0.05, 2.0) for _ in PULSE_CHANNELS]
        self._counters = {
            "water_volume_m3": rng.uniform(100.0, 90000.0),
            "gas_volume_m3": rng.uniform(100.0, 90000.0),
            **{f"pulse_count_ch{ch}": float(rng.randrange(0, 10**6)) for ch in PULSE_CHANNELS},
        }
        self._counters["gas_volume_nm3"] = self._counters["gas_volume_m3"] * self._gas_correction()
        self._last_t = clock()

    def _gas_correction(self) -> float:
        """Line volume to base volume (0 °C, 101.325 kPa): ideal gas, compressibility 1."""
        return (self._gas_kpa / 101.325) * (273.15 / (273.15 + self._gas_celsius))

    def flow_rates(self, t: float) -> dict[str, float]:
        """What the water, gas and pulse counters grow by per second at t."""
        water = max(self._water_m3h + self._water_wave(t), 0.0)
        gas = max(self._gas_m3h + self._gas_wave(t), 0.0)
        rates = {
            "water_volume_m3": water / 3600.0,
            "gas_volume_m3": gas / 3600.0,
            "gas_volume_nm3": gas * self._gas_correction() / 3600.0,
        }
        rates.update(
            {
                f"pulse_count_ch{ch}": hz
                for ch, hz in zip(PULSE_CHANNELS, self._pulse_hz, strict=True)
            }
        )
        return rates

    def true_power_w(self, t: float) -> float:
        """The load's real consumption (before any reversed CT); never below 10 % of base, before
        the shape."""
        value = max(
            self.base_w + self._swing(t) + sum(n(t) for n in self._noise), 0.1 * self.base_w
        )
        shape = self.shape
        return value if shape is None else value * shape(t)

    def power_factor_magnitude(self, t: float) -> float:
        return 0.945 + self._pf(t)  # 0.905 .. 0.985

    def phase_powers_w(self, t: float) -> list[float]:
        """Per-phase active power as the meter measures it (a reversed CT flips its phase)."""
        weights = [1.0 + s(t) for s in self._share]
        total_weight = sum(weights)
        true = self.true_power_w(t)
        return [
            -true * w / total_weight if phase in self.reversed_ct else true * w / total_weight
            for phase, w in zip(PHASES, weights, strict=True)
        ]

    def _rates(self, t: float) -> tuple[float, float]:
        """Measured total active power (W) and reactive power (var) at t."""
        powers = self.phase_powers_w(t)
        tan_phi = math.tan(math.acos(self.power_factor_magnitude(t)))
        return sum(powers), sum(p * tan_phi for p in powers)

    def _integrate(self, start: float, end: float) -> None:
        steps = min(_MAX_STEPS, max(1, math.ceil((end - start) / _STEP_S)))
        h = (end - start) / steps
        imp = exp = rimp = rexp = 0.0
        before = self._rates(start)
        flows_before = self.flow_rates(start)
        for i in range(1, steps + 1):
            after = self._rates(start + i * h)
            flows_after = self.flow_rates(start + i * h)
            for name, rate in flows_after.items():
                self._counters[name] += (flows_before[name] + rate) * h / 2
            flows_before = flows_after
            # Trapezoid of the positive and negative parts separately: import and export counters
            # each only grow, like a meter's.
            imp += (max(before[0], 0.0) + max(after[0], 0.0)) * h / 2
            exp += (max(-before[0], 0.0) + max(-after[0], 0.0)) * h / 2
            rimp += (max(before[1], 0.0) + max(after[1], 0.0)) * h / 2
            rexp += (max(-before[1], 0.0) + max(-after[1], 0.0)) * h / 2
            before = after
        to_kwh = 1.0 / 3.6e6  # watt-seconds to kilowatt-hours
        self._energy["active_energy_import_kwh"] += imp * to_kwh
        self._energy["active_energy_export_kwh"] += exp * to_kwh
        self._energy["reactive_energy_import_kvarh"] += rimp * to_kwh
        self._energy["reactive_energy_export_kvarh"] += rexp * to_kwh

    def sample(self) -> dict[str, float]:
        """Advance the counters to now and return every quantity the model produces."""
        with self._lock:
            t = self.clock()
            if t > self._last_t:
                self._integrate(self._last_t, t)
            # A clock that steps back (NTP) just restarts integration from the new time.
            self._last_t = t
            energy = dict(self._energy)
            counters = dict(self._counters)
        powers = self.phase_powers_w(t)
        pf = self.power_factor_magnitude(t)
        values: dict[str, float] = {}
        apparent = 0.0
        for phase, power in zip(PHASES, powers, strict=True):
            offset, wave = self._volts[phase - 1]
            volts = 230.0 + offset + wave(t)
            amps = abs(power) / (volts * pf)
            apparent += volts * amps
            values[f"voltage_l{phase}_v"] = volts
            values[f"current_l{phase}_a"] = amps
            values[f"active_power_l{phase}_w"] = power
        total, reactive = self._rates(t)
        values["active_power_w"] = total
        values["reactive_power_var"] = reactive
        values["apparent_power_va"] = apparent
        values["power_factor"] = total / apparent
        values["frequency_hz"] = 50.0 + self._freq(t)
        values.update(energy)
        self._add_phase_details(values, t)
        flows = self.flow_rates(t)
        values["water_flow_m3h"] = flows["water_volume_m3"] * 3600.0
        values["gas_flow_m3h"] = flows["gas_volume_m3"] * 3600.0
        values["gas_flow_nm3h"] = flows["gas_volume_nm3"] * 3600.0
        values["gas_temperature_c"] = self._gas_celsius
        values["gas_pressure_kpa"] = self._gas_kpa
        values.update(counters)
        return values

    def _add_phase_details(self, values: dict[str, float], t: float) -> None:
        """Per-phase apparent/reactive power and power factor, and line-to-line voltages."""
        tan_phi = math.tan(math.acos(self.power_factor_magnitude(t)))
        for phase in PHASES:
            power = values[f"active_power_l{phase}_w"]
            apparent = values[f"voltage_l{phase}_v"] * values[f"current_l{phase}_a"]
            values[f"apparent_power_l{phase}_va"] = apparent
            values[f"reactive_power_l{phase}_var"] = power * tan_phi
            values[f"power_factor_l{phase}"] = power / apparent
        for a, b in ((1, 2), (2, 3), (3, 1)):
            # Phasors 120 degrees apart: |Ua - Ub| = sqrt(Ua^2 + Ub^2 + Ua*Ub).
            ua, ub = values[f"voltage_l{a}_v"], values[f"voltage_l{b}_v"]
            values[f"voltage_l{a}_l{b}_v"] = math.sqrt(ua * ua + ub * ub + ua * ub)
