"""Pulse inputs: debounce, rate limit, exact conversion, GPIO errors in words, and totals that
survive a SIGKILL of the real daemon without losing committed pulses or counting any twice."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import queue
import sqlite3
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer.store import Buffer
from drivers.pulse import (
    FLAG_RATE_LIMITED,
    EmulatedPulseSource,
    PulseCounter,
    PulseSource,
    PulseSourceError,
    pulses_to_units,
)
from drivers.pulse.gpio import GpiodPulseSource
from drivers.snapshot import NO_CONNECTION, OK, Snapshot
from gateway.config import Config, ConfigError, PulseInput, load
from gateway.daemon import Daemon, pulse_totals
from gateway.pulse_poller import PulsePoller, PulseReading, state_key
from tests.support.gateway import DaemonProcess, committed_records, write_pulse_config
from tests.support.platform import wait_until

MS = 1_000_000


# -- the counter ------------------------------------------------------------------------


def test_edges_closer_than_the_debounce_are_rejected_as_bounce() -> None:
    counter = PulseCounter(debounce_s=0.020, max_rate_hz=100)
    accepted = counter.feed([0, 5 * MS, 30 * MS, 31 * MS, 49 * MS, 100 * MS])
    assert accepted == 3  # 0, 30 and 100 ms; 5, 31 and 49 ms bounce
    assert (counter.total, counter.rejected_bounce, counter.rejected_rate) == (3, 3, 0)


def test_pulses_above_the_rate_limit_are_rejected_and_counted() -> None:
    counter = PulseCounter(debounce_s=0.0, max_rate_hz=10)
    counter.feed([i * 50 * MS for i in range(20)])  # 20 Hz for one second
    assert (counter.total, counter.rejected_rate) == (10, 10)
    counter.feed([1000 * MS])  # the first pulse has left the window: room for one more
    assert counter.total == 11


def test_a_steady_rate_at_the_limit_is_counted_in_full() -> None:
    counter = PulseCounter(debounce_s=0.03, max_rate_hz=10)
    counter.feed([i * 100 * MS for i in range(100)])
    assert (counter.total, counter.rejected_rate, counter.rejected_bounce) == (100, 0, 0)


def test_a_slow_rate_limit_uses_a_window_of_one_pulse_period() -> None:
    counter = PulseCounter(debounce_s=0.0, max_rate_hz=0.5)  # one pulse per 2 s
    counter.feed([0, 1000 * MS, 1999 * MS, 2000 * MS])
    assert (counter.total, counter.rejected_rate) == (2, 2)


def test_the_counter_resumes_from_a_seeded_total() -> None:
    counter = PulseCounter(debounce_s=0.02, max_rate_hz=20, total=41_000)
    counter.feed([0, 100 * MS])
    assert counter.total == 41_002


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 200 * MS), max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=10),
    debounce_ms=st.integers(0, 50),
    max_rate_hz=st.sampled_from([0.5, 1, 7.5, 20, 50]),
)
def test_counts_do_not_depend_on_how_edges_arrive_in_batches(
    gaps: list[int], cuts: list[int], debounce_ms: int, max_rate_hz: float
) -> None:
    edges, ts = [], 0
    for gap in gaps:
        ts += gap
        edges.append(ts)
    whole = PulseCounter(debounce_ms / 1000, max_rate_hz)
    whole.feed(edges)
    batched = PulseCounter(debounce_ms / 1000, max_rate_hz)
    bounds = [0, *sorted(c for c in cuts if c <= len(edges)), len(edges)]
    for start, end in itertools.pairwise(bounds):
        batched.feed(edges[start:end])
    assert (batched.total, batched.rejected_bounce, batched.rejected_rate) == (
        whole.total,
        whole.rejected_bounce,
        whole.rejected_rate,
    )
    assert whole.total + whole.rejected_bounce + whole.rejected_rate == len(edges)


PULSE_WEIGHTS = ["1", "10", "100", "800", "1000", "1600", "3200", "0.1", "0.5", "2.5", "12.5"]


@settings(max_examples=300, deadline=None)
@given(
    weight=st.sampled_from(PULSE_WEIGHTS),
    seed=st.integers(0, 10**12),
    batches=st.lists(st.integers(0, 5000), max_size=30),
)
def test_the_value_is_exactly_total_over_pulses_per_unit_however_many_pulses(
    weight: str, seed: int, batches: list[int]
) -> None:
    pulses_per_unit = float(weight)  # as TOML hands it over
    counter = PulseCounter(debounce_s=0.0, max_rate_hz=1e9, total=seed)
    ts = 0
    for n in batches:
        counter.feed(range(ts, ts + n))
        ts += n
    assert counter.total == seed + sum(batches)
    value = pulses_to_units(counter.total, pulses_per_unit)
    # The decimal the configuration wrote, in exact arithmetic, rounded once.
    assert value == float(Fraction(counter.total) / Fraction(weight))
    assert round(value * Fraction(weight)) == counter.total


def test_repeated_small_steps_do_not_drift() -> None:
    # Ten million 0.001 kWh pulses: summing floats drifts, deriving from the total does not.
    drifting = 0.0
    for _ in range(10_000):
        drifting += 1 / 1000
    assert drifting != 10.0
    assert pulses_to_units(10_000, 1000.0) == 10.0
    assert pulses_to_units(10_000_000, 1000.0) == 10_000.0
    assert pulses_to_units(3, 0.1) == 30.0


# -- sources --------------------------------------------------------------------------------


def test_the_emulated_source_produces_edges_at_its_rate() -> None:
    created = time.monotonic_ns()
    source = EmulatedPulseSource(rate_hz=100)
    edges: list[int] = []
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        edges += source.wait(0.05)
    source.close()
    elapsed_ns = time.monotonic_ns() - created
    assert 25 <= len(edges) <= elapsed_ns // (10 * MS)
    assert edges[-1] <= time.monotonic_ns()
    assert {b - a for a, b in itertools.pairwise(edges)} == {10 * MS}


def test_the_emulated_source_delivers_an_injected_burst_at_once() -> None:
    source = EmulatedPulseSource(rate_hz=0)
    assert source.wait(0.01) == []
    source.inject(5)
    started = time.monotonic()
    edges = source.wait(5)
    assert len(edges) == 5 and len(set(edges)) == 1
    assert time.monotonic() - started < 1
    source.close()
    with pytest.raises(PulseSourceError):
        source.wait(0)


def test_a_missing_gpio_chip_is_an_error_in_words(tmp_path: Path) -> None:
    with pytest.raises(PulseSourceError, match=r"no GPIO chip .*gpiochip9 \(`gpiodetect`"):
        GpiodPulseSource(str(tmp_path / "gpiochip9"), 4, debounce_s=0.02)


def test_a_device_that_is_not_a_gpio_chip_is_an_error_in_words() -> None:
    with pytest.raises(PulseSourceError, match="cannot request line 4 of /dev/null"):
        GpiodPulseSource("/dev/null", 4, debounce_s=0.02)


# -- the poller ------------------------------------------------------------------------------


def drain(sink: queue.SimpleQueue[Snapshot], count: int, timeout_s: float = 10) -> list[Snapshot]:
    got: list[Snapshot] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        got.append(sink.get(timeout=max(0.0, deadline - time.monotonic())))
    return got


def test_a_missing_chip_gives_no_connection_records_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pulse_input = PulseInput(
        id="water",
        quantity="water_volume_m3",
        pulses_per_unit=100,
        chip=str(tmp_path / "gpiochip0"),
        line=17,
        interval_s=0.1,
    )
    sink: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
    poller = PulsePoller(pulse_input, sink, total=0)
    with caplog.at_level(logging.WARNING, logger="cgw.pulses"):
        poller.start()
        records = drain(sink, 3)
        poller.stop()
        poller.join(5)
    for record in records:
        assert record.quality == NO_CONNECTION and record.values == {}
        assert record.error is not None and "no GPIO chip" in record.error
        assert isinstance(record, PulseReading) and record.total is None
    assert poller.health.last_quality == NO_CONNECTION
    assert poller.health.consecutive_failures >= 3
    warnings = [r for r in caplog.records if "no GPIO chip" in r.getMessage()]
    assert len(warnings) == 1  # said once, not once per retry
    assert all(r.exc_info is None for r in caplog.records)


class ScriptedSource:
    """Delivers `pulses` edges 100 ms apart on a shared clock, then fails if told to."""

    clock = 0

    def __init__(self, pulses: int, then_fail: bool) -> None:
        self.pulses, self.then_fail = pulses, then_fail

    def wait(self, timeout_s: float) -> list[int]:
        time.sleep(min(timeout_s, 0.01))
        if self.pulses:
            self.pulses -= 1
            ScriptedSource.clock += 100 * MS
            return [ScriptedSource.clock]
        if self.then_fail:
            raise PulseSourceError("line 4 of /dev/gpiochip0: gone")
        return []

    def close(self) -> None:
        pass


def test_a_failing_source_is_reopened_and_the_count_goes_on() -> None:
    pulse_input = PulseInput(
        id="s0", quantity="active_energy_import_kwh", pulses_per_unit=1000, interval_s=0.1
    )
    opened: list[str] = []

    def opener(_: PulseInput) -> PulseSource:
        # The line fails after one pulse, cannot be had back at once, then counts again.
        opened.append("attempt")
        if len(opened) == 2:
            raise PulseSourceError("no GPIO chip /dev/gpiochip0")
        return (
            ScriptedSource(pulses=1, then_fail=True)
            if len(opened) == 1
            else ScriptedSource(5, False)
        )

    sink: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
    poller = PulsePoller(pulse_input, sink, total=7, opener=opener)
    poller.start()
    wait_until(lambda: poller.counter.total >= 7 + 1 + 5, 10, "the reopened source's pulses")
    poller.stop()
    poller.join(5)
    records = drain(sink, sink.qsize())
    qualities = [r.quality for r in records]
    assert NO_CONNECTION in qualities and qualities[-1] == OK
    assert len(opened) == 3
    totals = [r.total for r in records if isinstance(r, PulseReading) and r.total is not None]
    assert totals == sorted(totals) and totals[-1] == poller.counter.total == 13
    assert records[-1].values == {"active_energy_import_kwh": 0.013}


def test_rejected_pulses_flag_the_record() -> None:
    pulse_input = PulseInput(
        id="s0",
        quantity="active_energy_import_kwh",
        pulses_per_unit=1000,
        source="emulated",
        emulated_rate_hz=0,
        max_rate_hz=5,
        debounce_s=0,
        interval_s=0.2,
    )
    source = EmulatedPulseSource(rate_hz=0)
    sink: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
    poller = PulsePoller(pulse_input, sink, total=0, opener=lambda _: source)
    poller.start()
    source.inject(20, spacing_ns=MS)  # 20 pulses in 20 ms: 15 beyond a 5 Hz limit
    wait_until(lambda: poller.counter.rejected_rate == 15, 5, "the burst to be counted")
    first = drain(sink, 1)[0]
    while first.flags == {}:  # a record may have been due before the burst arrived
        first = drain(sink, 1)[0]
    assert first.flags == {"active_energy_import_kwh": FLAG_RATE_LIMITED}
    assert first.values == {"active_energy_import_kwh": 0.005}
    assert drain(sink, 1)[0].flags == {}  # nothing rejected since: no flag
    poller.stop()
    poller.join(5)
    assert poller.health.rejected_rate == 15 and poller.health.total_pulses == 5


# -- persistence -----------------------------------------------------------------------------


def test_state_is_saved_in_the_transaction_of_the_records(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.db", gateway="gw", site="s")
    assert buffer.state_int("pulses.s0") == 0
    assert buffer.commit("readings", [b"{}"], {"pulses.s0": 120})
    assert buffer.state_int("pulses.s0") == 120
    with pytest.raises(sqlite3.IntegrityError):  # the records fail: the total is not saved
        buffer.commit("readings", [None], {"pulses.s0": 240})  # type: ignore[list-item]
    assert buffer.state_int("pulses.s0") == 120
    assert buffer.stats().pending_records == 1
    buffer.close()


def test_a_batch_saves_each_inputs_highest_total() -> None:
    def reading(device: str, total: int | None) -> PulseReading:
        return PulseReading(device=device, ts_ms=0, quality=OK, total=total)

    batch: list[Snapshot] = [
        reading("a", 5),
        Snapshot(device="meter", ts_ms=0, quality=OK),
        reading("b", 9),
        reading("a", 7),
        reading("b", None),
    ]
    assert pulse_totals(batch) == {state_key("a"): 7, state_key("b"): 9}


# -- configuration ----------------------------------------------------------------------------

GATEWAY = '[gateway]\nid = "gw-1"\nsite = "s1"\ndata_dir = "data"\n'
DEVICE = (
    '[[buses]]\nid = "b1"\ntype = "tcp"\nhost = "10.0.0.1"\n'
    '[[devices]]\nid = "incomer"\nbus = "b1"\nunit = 1\nprofile = "eastron_sdm630"\n'
)
GPIO_INPUT = (
    '[[pulse_inputs]]\nid = "{id}"\nline = 17\nquantity = "{quantity}"\npulses_per_unit = {ppu}\n'
)


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "gateway.toml"
    path.write_text(GATEWAY + text, encoding="utf-8")
    return load(path)


def test_a_pulse_input_takes_the_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, GPIO_INPUT.format(id="s0", quantity="gas_volume_nm3", ppu=100))
    assert config.pulse_inputs == (
        PulseInput(id="s0", quantity="gas_volume_nm3", pulses_per_unit=100.0, line=17),
    )
    assert config.pulse_inputs[0].quantity_units() == {"gas_volume_nm3": "Nm3"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GPIO_INPUT.format(id="s0", quantity="water_volume_m3", ppu=0),
            "pulse_inputs[0].pulses_per_unit: must be > 0",
        ),
        (
            GPIO_INPUT.format(id="s0", quantity="active_power_w", ppu=1000),
            "pulse_inputs[0].quantity: 'active_power_w' is not a counter quantity",
        ),
        (
            '[[pulse_inputs]]\nid = "s0"\nquantity = "water_volume_m3"\npulses_per_unit = 1\n',
            "pulse_inputs[0].line: is required",
        ),
        (
            GPIO_INPUT.format(id="s0", quantity="water_volume_m3", ppu=1)
            + "emulated_rate_hz = 2\n",
            'pulse_inputs[0].emulated_rate_hz: only for source = "emulated"',
        ),
        (
            GPIO_INPUT.format(id="s0", quantity="water_volume_m3", ppu=1) + 'edge = "both"\n',
            "pulse_inputs[0].edge: must be one of 'falling', 'rising'",
        ),
        (
            GPIO_INPUT.format(id="s0", quantity="water_volume_m3", ppu=1) + "debounce_ms = -1\n",
            "pulse_inputs[0].debounce_ms: must be between 0 and 1000",
        ),
        (
            GPIO_INPUT.format(id="s0", quantity="water_volume_m3", ppu=1)
            + GPIO_INPUT.format(id="s0", quantity="gas_volume_m3", ppu=1),
            "pulse_inputs[1].id: duplicate pulse input id 's0'",
        ),
        (
            DEVICE + GPIO_INPUT.format(id="incomer", quantity="water_volume_m3", ppu=1),
            "pulse_inputs[0].id: 'incomer' is already a device id",
        ),
    ],
)
def test_pulse_input_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert message in str(caught.value)


def test_meta_and_health_show_pulse_inputs(tmp_path: Path) -> None:
    config = load(write_pulse_config(tmp_path, rate_hz=10, absent_chip=tmp_path / "gpiochip0"))
    daemon = Daemon(config)
    try:
        devices = {d["id"]: d for d in daemon.meta()["devices"]}  # type: ignore[attr-defined]
        assert devices["s0"] == {
            "id": "s0",
            "protocol": "pulse",
            "source": "emulated",
            "pulses_per_unit": 1000.0,
            "interval_s": 0.2,
            "quantities": {"active_energy_import_kwh": "kWh"},
        }
        assert devices["s0-gpio"]["chip"] == str(tmp_path / "gpiochip0")
        assert devices["s0-gpio"]["quantities"] == {"water_volume_m3": "m3"}
        assert set(daemon.device_health()) == {"s0", "s0-gpio"}
    finally:
        daemon.buffer.close()


# -- the real daemon --------------------------------------------------------------------------

RATE_HZ = 50


def totals(records: list[dict[str, object]]) -> list[int]:
    """Pulse totals of the emulated input's records (the value is kWh at 1000 pulses/kWh)."""
    out = []
    for r in records:
        if r["device"] == "s0":
            kwh = r["values"]["active_energy_import_kwh"]  # type: ignore[index]
            assert kwh * 1000 == round(kwh * 1000)
            out.append(round(kwh * 1000))
    return out


def test_pulse_totals_survive_sigkill_without_loss_or_double_counting(tmp_path: Path) -> None:
    config = write_pulse_config(tmp_path, rate_hz=RATE_HZ, absent_chip=tmp_path / "gpiochip0")
    db = tmp_path / "data" / "buffer.db"
    daemon = DaemonProcess(config).start().wait_running()
    wait_until(lambda: sum(totals(committed_records(db))[-1:]) >= 2 * RATE_HZ, 30, "100 pulses")

    def status() -> dict[str, Any]:
        return json.loads((tmp_path / "run" / "status.json").read_text())["devices"]

    wait_until(lambda: status()["s0-gpio"]["polls"] > 0, 10, "the status file to show the inputs")
    devices = status()
    assert devices["s0"]["last_quality"] == OK
    assert devices["s0"]["total_pulses"] > 0
    assert devices["s0-gpio"]["last_quality"] == NO_CONNECTION
    assert "no GPIO chip" in devices["s0-gpio"]["last_error"]

    daemon.kill()
    before = committed_records(db)
    first_run = totals(before)
    assert first_run == sorted(first_run) and first_run[-1] > first_run[0]
    gpio = [r for r in before if r["device"] == "s0-gpio"]
    assert gpio and all(r["quality"] == NO_CONNECTION for r in gpio)
    assert "no GPIO chip" in str(gpio[0]["error"])
    with contextlib.closing(daemon.buffer()) as buffer:
        saved = buffer.state_int(state_key("s0"))
    assert saved == first_run[-1]  # the state holds exactly the last committed record's total

    restarted = time.monotonic()
    daemon = DaemonProcess(config).start().wait_running()
    wait_until(lambda: len(totals(committed_records(db))) >= len(first_run) + 5, 30, "new records")
    assert daemon.stop() == 0
    elapsed_s = time.monotonic() - restarted
    second_run = totals(committed_records(db))[len(first_run) :]
    assert second_run == sorted(second_run)
    assert second_run[0] >= saved  # resumed, never lower
    # Only pulses emitted since the restart are added: counting the saved total twice would
    # add `saved` (>= 100) on top.
    assert second_run[-1] - saved <= RATE_HZ * elapsed_s + 1
    assert second_run[-1] - saved < saved
    with contextlib.closing(daemon.buffer()) as buffer:
        assert buffer.state_int(state_key("s0")) == second_run[-1]  # SIGTERM saved the last count
    assert "Traceback" not in daemon.logs()
