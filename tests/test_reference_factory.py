"""The reference factory: a month of a small site through `Accounting`, against totals by hand.

November 2026 in Asia/Shanghai, every device read on the minute (tests/support/factory.py has the
model and the events): a grid incomer, a PV meter, three sub-meters, a gas meter and a production
counter on pulse inputs; a clock two days behind at boot, a gateway outage, a LAN outage and a
meter replacement. Every expected figure below is plain arithmetic on the model, written out; the
published records must match it to the Wh (1e-6 kWh as published), the gram and the reading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.accounting.factors import DEFAULT_GRID_KEY, FactorLibrary
from tests.support.factory import Record, Run, local_ms, record_key, run_month

KWH = Decimal("0.000001")  # energy as published: 1e-6 of its unit
KG = Decimal("0.001")  # kgCO2e and kgce as published: the gram
RATIO = Decimal("0.000001")
HOUR_MS = 3_600_000
QUARTER_MS = 900_000

# --- factors (FACTS.md), by value ---------------------------------------------------------------
GRID_KG_PER_KWH = Decimal("0.5306")  # MEE/NBS 2023 national average
ELECTRICITY_KGCE_PER_KWH = Decimal("0.1229")  # GB/T 2589-2020
GAS_KGCE_PER_NM3 = Decimal("1.2143")
# NCV 389.31 GJ/1e4 Nm3 x 15.3 tC/TJ x 99 % x 44/12, to 6 places as factors.py keeps it.
GAS_KG_PER_NM3_BY_HAND = (
    Decimal("389.31") / 10000 * Decimal("15.3") * Decimal("0.99") * 44 / 12
).quantize(Decimal("0.000001"))
GAS_KG_PER_NM3 = FactorLibrary.shipped().get("fuel/natural_gas").value
GAS_CONVERSION = Decimal("0.95")  # line m3 -> Nm3, as configured

# --- the meters ---------------------------------------------------------------------------------
IMPORT = ("incomer", "active_energy_import_kwh")
EXPORT = ("incomer", "active_energy_export_kwh")
PV = ("pv", "active_energy_export_kwh")
LOAD_A = ("load-a", "active_energy_import_kwh")
LOAD_B = ("load-b", "active_energy_import_kwh")
LOAD_C = ("load-c", "active_energy_import_kwh")
GAS = ("gas", "gas_volume_m3")
LINE = ("line", "production_count")
METERS = (IMPORT, EXPORT, PV, LOAD_A, LOAD_B, LOAD_C, GAS, LINE)
ELECTRIC = (IMPORT, EXPORT, PV, LOAD_A, LOAD_B, LOAD_C)
MODBUS_DEVICES = ("incomer", "pv", "load-a", "load-b", "load-c")
DEVICES = (*MODBUS_DEVICES, "gas", "line")


# --- the model, by hand -------------------------------------------------------------------------
def kw(meter: tuple[str, str], hour: int) -> Decimal:
    """Power (kW; gas m3/h at line conditions; products/h) in a local hour of an ordinary day."""
    a, b, c = 12, 6 if 8 <= hour < 20 else 0, 3
    pv = 24 if 9 <= hour < 15 else 0
    table = {
        LOAD_A: a,
        LOAD_B: b,
        LOAD_C: c,
        PV: pv,
        IMPORT: max(0, a + b + c - pv),
        EXPORT: max(0, pv - (a + b + c)),
        GAS: 10 if 6 <= hour < 18 else 0,
        LINE: 50 if 8 <= hour < 20 else 0,
    }
    return Decimal(table[meter])


# An ordinary day (kWh; gas Nm3; products):
DAY = {
    LOAD_A: Decimal(12 * 24),  # 288
    LOAD_B: Decimal(6 * 12),  # 72
    LOAD_C: Decimal(3 * 24),  # 72
    PV: Decimal(24 * 6),  # 144
    # load 15 kW 00-08 and 20-24, 21 kW 08-20; PV covers all of it 09-15 and sends 3 kW out
    IMPORT: Decimal(15 * 8 + 21 * 1 + 0 * 6 + 21 * 5 + 15 * 4),  # 306
    EXPORT: Decimal((24 - 21) * 6),  # 18
    GAS: Decimal(10 * 12) * GAS_CONVERSION,  # 120 m3 at line conditions = 114 Nm3
    LINE: Decimal(50 * 12),  # 600
}
CONSUMPTION_DAY = DAY[IMPORT] + DAY[PV] - DAY[EXPORT]  # 432 = 288 + 72 + 72
SELF_CONSUMED_DAY = Decimal((24 - 3) * 6)  # 126: PV used on site, 09-15

# The gateway is down 2026-11-10 after the 09:59 poll until 13:00: the registers keep counting,
# but nobody counts the pulse lines. The gas meter pulses 1000 an hour from 06:00: it has sent
# floor(239 min x 1000/60) pulses that day by 09:59, floor(420 min x 1000/60) by 13:00.
GAS_LOST_M3 = Decimal(420 * 1000 // 60 - 239 * 1000 // 60) / 100  # 7000 - 3983 pulses = 30.17 m3
GAS_LOST = GAS_LOST_M3 * GAS_CONVERSION
# The line makes 50 an hour from 08:00: floor(119 x 50/60) = 99 by 09:59, floor(300 x 50/60) = 250
LINE_LOST = Decimal(300 * 50 // 60 - 119 * 50 // 60)  # 151
# load-c's meter is replaced on 2026-11-20: the old one is last read at 11:59, the new one reads
# 0.000 at 12:00. Its minute 11:59-12:00 (3 kW for 1/60 h) is on no register.
C_LOST = Decimal(3) / 60  # 0.05 kWh


def day_by_hand(day: int) -> dict[tuple[str, str], Decimal]:
    out = dict(DAY)
    if day == 10:
        out[GAS] -= GAS_LOST
        out[LINE] -= LINE_LOST
    if day == 20:
        out[LOAD_C] -= C_LOST
    return out


MONTH = {m: sum((day_by_hand(d)[m] for d in range(1, 31)), Decimal(0)) for m in METERS}
MINUTES = 30 * 1440  # readings each device owes the month
GATEWAY_DOWN = 3 * 60  # 10:00-12:59 on the 10th: no reading from any device
LAN_DOWN = 60  # 14:00-14:59 on the 25th: no reading from the Modbus meters
RECEIVED = {d: MINUTES - GATEWAY_DOWN - (LAN_DOWN if d in MODBUS_DEVICES else 0) for d in DEVICES}


# --- reading the records --------------------------------------------------------------------------
def num(value: object) -> Decimal:
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    return Decimal(repr(value))


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_month(Path(tmp_path_factory.mktemp("factory")))


@pytest.fixture(scope="module")
def latest(month: Run) -> dict[tuple[object, ...], Record]:
    return month.latest()


def meter_record(
    latest: dict[tuple[object, ...], Record],
    meter: tuple[str, str],
    period: str,
    start_ms: int,
) -> Record:
    return latest[("meter", *meter, period, start_ms)]


def site_record(latest: dict[tuple[object, ...], Record], period: str, start_ms: int) -> Record:
    return latest[("site", None, None, period, start_ms)]


def revisions(month: Run, key: tuple[object, ...]) -> list[Record]:
    return [r for r in month.intervals if record_key(r) == key]


def quarters(start_ms: int, end_ms: int) -> Iterator[int]:
    yield from range(start_ms, end_ms, QUARTER_MS)


MONTH_START = local_ms(1)
MONTH_END = local_ms(31)


# --- the tests ------------------------------------------------------------------------------------
def test_the_factors_are_the_facts() -> None:
    library = FactorLibrary.shipped()
    assert library.get(DEFAULT_GRID_KEY).value == GRID_KG_PER_KWH
    assert library.get("coal/electricity").value == ELECTRICITY_KGCE_PER_KWH
    assert library.get("coal/natural_gas").value == GAS_KGCE_PER_NM3
    assert GAS_KG_PER_NM3.quantize(Decimal("0.0001")) == Decimal("2.1622")
    assert GAS_KG_PER_NM3 == GAS_KG_PER_NM3_BY_HAND
    assert CONSUMPTION_DAY == DAY[LOAD_A] + DAY[LOAD_B] + DAY[LOAD_C] == 432
    assert SELF_CONSUMED_DAY == DAY[PV] - DAY[EXPORT] == 126


def test_month_per_meter(latest: dict[tuple[object, ...], Record]) -> None:
    assert MONTH[LOAD_C] == Decimal(72 * 30) - Decimal("0.05")  # the replacement minute is lost
    assert MONTH[GAS] == (Decimal(120 * 30) - Decimal("30.17")) * Decimal("0.95")  # 3391.3385 Nm3
    assert MONTH[LINE] == 600 * 30 - 151
    for meter in METERS:
        record = meter_record(latest, meter, "month", MONTH_START)
        amount = MONTH[meter]
        electric = meter in ELECTRIC
        emission = {IMPORT: GRID_KG_PER_KWH, LOAD_A: GRID_KG_PER_KWH, LOAD_B: GRID_KG_PER_KWH}
        emission |= {LOAD_C: GRID_KG_PER_KWH, GAS: GAS_KG_PER_NM3}
        coal = ELECTRICITY_KGCE_PER_KWH if electric else GAS_KGCE_PER_NM3 if meter == GAS else 0
        assert (record["start"], record["end_ms"]) == ("2026-11-01T00:00:00+08:00", MONTH_END)
        assert num(record["energy"]) == amount.quantize(KWH), meter
        assert record["unit"] == ("kWh" if electric else "Nm3" if meter == GAS else "products")
        assert record["kwh"] == (record["energy"] if electric else None), meter
        assert num(record["kgco2e"]) == (amount * emission.get(meter, 0)).quantize(KG), meter
        assert num(record["kgce"]) == (amount * coal).quantize(KG), meter
        assert num(record["held_out"]) == 0
        assert record["readings"] == RECEIVED[meter[0]], meter
        assert record["expected"] == MINUTES, meter
        flags = {"clock_unsynced", "estimated"} | ({"reset"} if meter == LOAD_C else set())
        assert set(record["flags"]) == flags, meter
        assert record["revision"] == 0


def test_month_for_the_site(latest: dict[tuple[object, ...], Record]) -> None:
    site = site_record(latest, "month", MONTH_START)
    grid_import, export, pv = Decimal(306 * 30), Decimal(18 * 30), Decimal(144 * 30)
    consumption = grid_import + pv - export
    self_consumed = Decimal(126 * 30)
    gas = MONTH[GAS]
    units = Decimal(600 * 30) - LINE_LOST
    assert consumption == Decimal(432) * 30 == 12960
    electricity = site["electricity"]
    assert electricity == {
        "grid_import_kwh": 9180,
        "grid_export_kwh": 540,
        "generation_kwh": 4320,
        "self_consumed_kwh": 3780,
        "consumption_kwh": 12960,
        "green_certificates_kwh": 0,
        "renewable_share": float((self_consumed / consumption).quantize(RATIO)),  # 0.291667
    }
    scope1 = gas * GAS_KG_PER_NM3
    scope2 = grid_import * GRID_KG_PER_KWH  # the sub-meters are not added on top
    co2e = site["co2e"]
    assert isinstance(co2e, dict)
    assert num(co2e["scope1_kg"]) == scope1.quantize(KG)
    assert num(co2e["scope2_kg"]) == scope2.quantize(KG) == Decimal("4870.908")
    assert num(co2e["scope3_kg"]) == 0
    assert num(co2e["total_kg"]) == (scope1 + scope2).quantize(KG)
    kgce = consumption * ELECTRICITY_KGCE_PER_KWH + gas * GAS_KGCE_PER_NM3
    renewable_kgce = self_consumed * ELECTRICITY_KGCE_PER_KWH
    energy = site["standard_coal"]
    assert isinstance(energy, dict)
    assert num(energy["kgce"]) == kgce.quantize(KG)
    assert num(energy["tce"]) == (kgce / 1000).quantize(Decimal("0.000001"))
    assert num(energy["renewable_kgce"]) == renewable_kgce.quantize(KG)
    assert num(energy["renewable_utilisation"]) == (renewable_kgce / kgce).quantize(RATIO)
    production = site["production"]
    assert isinstance(production, dict)
    assert num(production["units"]) == units == 17849
    assert num(production["kwh_per_unit"]) == (consumption / units).quantize(RATIO)
    assert num(production["kgce_per_unit"]) == (kgce / units).quantize(RATIO)
    assert num(production["kgco2e_per_unit"]) == ((scope1 + scope2) / units).quantize(RATIO)
    received = sum(RECEIVED.values())
    assert received == 7 * MINUTES - 7 * 180 - 5 * 60
    assert site["completeness"] == {
        "received": received,
        "expected": 7 * MINUTES,
        "rate": float((Decimal(received) / (7 * MINUTES)).quantize(RATIO)),
        "meets_required": True,
        "devices": {
            d: float((Decimal(RECEIVED[d]) / MINUTES).quantize(RATIO)) for d in sorted(DEVICES)
        },
    }
    assert set(site["flags"]) == {"clock_unsynced", "estimated", "reset"}


def test_days_match_the_model_and_add_up_to_the_month(
    latest: dict[tuple[object, ...], Record],
) -> None:
    for meter in METERS:
        days = [meter_record(latest, meter, "day", local_ms(d)) for d in range(1, 31)]
        for day, record in enumerate(days, start=1):
            assert num(record["energy"]) == day_by_hand(day)[meter].quantize(KWH), (meter, day)
            owed = 1440 - (180 if day == 10 else 0)
            owed -= 60 if day == 25 and meter[0] in MODBUS_DEVICES else 0
            assert (record["readings"], record["expected"]) == (owed, 1440), (meter, day)
        month = meter_record(latest, meter, "month", MONTH_START)
        # Exactly, in the published 1e-6 units: rounding happens once, from ticks.
        assert sum(num(r["energy"]) for r in days) == num(month["energy"]), meter
        hours = [
            meter_record(latest, meter, "hour", t) for t in range(MONTH_START, MONTH_END, HOUR_MS)
        ]
        assert sum(num(r["energy"]) for r in hours) == num(month["energy"]), meter
        intervals = [
            meter_record(latest, meter, "interval", t) for t in quarters(MONTH_START, MONTH_END)
        ]
        assert sum(num(r["energy"]) for r in intervals) == num(month["energy"]), meter
        assert sum(r["readings"] for r in intervals) == RECEIVED[meter[0]]
    for day in range(1, 31):
        site = site_record(latest, "day", local_ms(day))["electricity"]
        assert isinstance(site, dict)
        assert num(site["consumption_kwh"]) == CONSUMPTION_DAY, day
        assert num(site["self_consumed_kwh"]) == SELF_CONSUMED_DAY, day


def test_every_interval_and_hour_lands_where_the_model_says(
    latest: dict[tuple[object, ...], Record],
) -> None:
    """Each meter's energy in each interval is its power x 15 min (the pulse line per hour: 12.5
    products a quarter are whole only by the hour), except where an event says otherwise."""
    exceptions = {
        # 10th: the pulses of 09:59-13:00 were never counted; 09:45 has 09:45-09:59 (14 min)
        (GAS, local_ms(10, 9, 45)): Decimal(239 * 1000 // 60 - 225 * 1000 // 60)
        / 100
        * Decimal("0.95"),
        **{(GAS, t): Decimal(0) for t in quarters(local_ms(10, 10), local_ms(10, 13))},
        # 20th: load-c 11:45-11:59 on the old meter, the minute to 12:00 on no register
        (LOAD_C, local_ms(20, 11, 45)): Decimal(3) * 14 / 60,
    }
    line_exceptions = {
        local_ms(10, 9): Decimal(119 * 50 // 60 - 60 * 50 // 60),  # 99 - 50: 09:00-09:59
        local_ms(10, 10): Decimal(0),
        local_ms(10, 11): Decimal(0),
        local_ms(10, 12): Decimal(0),
    }
    for meter in METERS:
        for start in quarters(MONTH_START, MONTH_END):
            if meter == LINE:
                continue
            hour = (start - MONTH_START) // HOUR_MS % 24
            expected = exceptions.get((meter, start), kw(meter, hour) / 4)
            if meter == GAS and (meter, start) not in exceptions:
                expected *= GAS_CONVERSION
            record = meter_record(latest, meter, "interval", start)
            assert num(record["energy"]) == expected.quantize(KWH), (meter, record["start"])
    for start in range(MONTH_START, MONTH_END, HOUR_MS):
        hour = (start - MONTH_START) // HOUR_MS % 24
        record = meter_record(latest, LINE, "hour", start)
        assert num(record["energy"]) == line_exceptions.get(start, kw(LINE, hour)), record["start"]


def test_the_clock_held_readings_land_in_the_first_two_intervals(
    month: Run, latest: dict[tuple[object, ...], Record]
) -> None:
    assert min(r["start_ms"] for r in month.intervals) == MONTH_START
    for meter in METERS:
        for start in quarters(local_ms(1), local_ms(1, 0, 30)):
            record = meter_record(latest, meter, "interval", start)
            # 15 readings each, held for 30 min and re-timed by +2 days; their energy spread
            # over the wait (and so estimated): exact here, the load is steady then.
            assert record["readings"] == 15, meter
            assert set(record["flags"]) == {"clock_unsynced", "estimated"}, meter
            assert num(record["energy"]) == kw(meter, 0) / 4, meter
        after = meter_record(latest, meter, "interval", local_ms(1, 0, 30))
        assert (after["readings"], after["flags"]) == (15, ["ok"]), meter
    site = site_record(latest, "interval", local_ms(1))
    assert set(site["flags"]) == {"clock_unsynced", "estimated"}
    clock = [a for a in month.alarms if a["kind"] == "clock_corrected"]
    assert len(clock) == 1
    assert clock[0]["state"] == "event" and clock[0]["ts"] == local_ms(1, 0, 30)
    detail = clock[0]["detail"]
    assert isinstance(detail, dict)
    two_days = 2 * 24 * HOUR_MS
    assert detail["delta_ms"] == two_days
    assert (detail["from"], detail["until"]) == (
        local_ms(1) - two_days,
        local_ms(1, 0, 30) - two_days,
    )


def test_the_gateway_outage_is_apportioned_and_published_once(
    month: Run, latest: dict[tuple[object, ...], Record]
) -> None:
    """Nothing can be published while the gateway is down; after the restart its first checkpoint
    comes before the first reading, and the intervals 09:45-12:45 close only once the readings of
    13:00 are in: published once, estimated, with the registers' energy spread over 09:59-13:00."""
    outage = list(quarters(local_ms(10, 10), local_ms(10, 13)))
    for meter in METERS:
        for start in [local_ms(10, 9, 45), *outage]:
            key = ("meter", *meter, "interval", start)
            published = revisions(month, key)
            assert [r["revision"] for r in published] == [0], (meter, start)
            assert published[0]["flags"] == ["estimated"], (meter, start)
            assert published[0]["readings"] == (15 if start < outage[0] else 0)
    for start in outage:
        a = meter_record(latest, LOAD_A, "interval", start)
        assert num(a["energy"]) == Decimal(12) / 4  # 181 min of 36.2 kWh, 15 min of it
        assert site_record(latest, "interval", start)["flags"] == ["estimated"]
    day = [r for r in month.intervals if local_ms(10) <= r["start_ms"] < local_ms(11)]
    assert not [r for r in day if "gap" in r["flags"]]


def test_the_lan_outage_is_published_as_gaps_then_revised(
    month: Run, latest: dict[tuple[object, ...], Record]
) -> None:
    """The Modbus meters are silent 14:00-14:59 on the 25th while the gateway runs: the intervals
    close as gaps (revision 0) and are revised (revision 1) when the 15:00 readings come in."""
    gaps = list(quarters(local_ms(25, 14), local_ms(25, 14, 45)))
    before, last = local_ms(25, 13, 45), local_ms(25, 14, 45)
    for meter in (IMPORT, EXPORT, PV, LOAD_A, LOAD_B, LOAD_C):
        quarter = kw(meter, 14) / 4
        for start in gaps:
            first, revised = revisions(month, ("meter", *meter, "interval", start))
            assert (first["revision"], first["flags"], first["readings"]) == (0, ["gap"], 0)
            assert num(first["energy"]) == 0
            assert (revised["revision"], revised["flags"], revised["readings"]) == (
                1,
                ["estimated"],
                0,
            )
            assert num(revised["energy"]) == quarter, meter
        # 13:45: first with 13:45-13:59 (14 readings' worth of energy, 15 readings), then whole.
        first, revised = revisions(month, ("meter", *meter, "interval", before))
        assert (first["revision"], first["flags"], first["readings"]) == (0, ["ok"], 15), meter
        assert num(first["energy"]) == kw(meter, 13) * 14 / 60, meter
        assert (revised["revision"], revised["flags"], revised["readings"]) == (
            1,
            ["estimated"],
            15,
        )
        assert num(revised["energy"]) == kw(meter, 13) / 4, meter
        (closing,) = revisions(month, ("meter", *meter, "interval", last))
        assert (closing["revision"], closing["flags"], num(closing["energy"])) == (
            0,
            ["estimated"],
            quarter,
        )
    for meter in (GAS, LINE):  # counted on the gateway's own lines: never missing
        for start in [before, *gaps, last]:
            (record,) = revisions(month, ("meter", *meter, "interval", start))
            assert (record["readings"], record["flags"]) == (15, ["ok"])
    # Nothing else in the month was revised.
    revised_keys = {record_key(r) for r in month.intervals if r["revision"] != 0}
    meters = [("meter", *m) for m in ELECTRIC] + [("site", None, None)]
    assert revised_keys == {
        (*who, period, start)
        for who in meters
        for period, start in [
            ("interval", before),
            *(("interval", t) for t in gaps),
            ("hour", local_ms(25, 13)),
        ]
    }
    assert max(r["revision"] for r in month.intervals) == 1


def test_the_meter_replacement(month: Run, latest: dict[tuple[object, ...], Record]) -> None:
    swap = meter_record(latest, LOAD_C, "interval", local_ms(20, 11, 45))
    assert (swap["flags"], swap["readings"]) == (["reset"], 15)
    assert num(swap["energy"]) == Decimal(3) * 14 / 60  # 0.7 kWh: 11:45-11:59 on the old meter
    new = meter_record(latest, LOAD_C, "interval", local_ms(20, 12))
    assert (new["flags"], num(new["energy"])) == (["ok"], Decimal(3) / 4)
    resets = [a for a in month.alarms if a["kind"] == "counter_reset"]
    assert len(resets) == 1
    assert (resets[0]["device"], resets[0]["state"], resets[0]["ts"]) == (
        "load-c",
        "event",
        local_ms(20, 12),
    )
    assert resets[0]["detail"] == {
        "quantity": "active_energy_import_kwh",
        "from_ms": local_ms(20, 11, 59),
        "until_ms": local_ms(20, 12),
        "energy": 0,
        "held_out": 0,
    }


def test_the_alarm_stream(month: Run) -> None:
    """Every alarm of the month, and no other: the clock wait raises no data_gap (the readings
    were all there, only their spread over the wait is estimated)."""
    seen = Counter(
        (a["kind"], a["state"], a["device"], a["ts"], _quantity(a), _energy(a))
        for a in month.alarms
    )
    down = local_ms(10, 13)
    lan_back = local_ms(25, 15)
    expected: Counter[tuple[object, ...]] = Counter()
    expected[("clock_corrected", "event", "", local_ms(1, 0, 30), None, None)] += 1
    expected[("counter_reset", "event", "load-c", local_ms(20, 12), LOAD_C[1], Decimal(0))] += 1
    for meter in METERS:  # 09:59-13:00 on the 10th: 181 min
        energy = Decimal(0) if meter in (GAS, LINE) else kw(meter, 11) * 181 / 60
        expected[("data_gap", "event", meter[0], down, meter[1], energy)] += 1
    for meter in ELECTRIC:  # 13:59-15:00 on the 25th: 61 min
        expected[("data_gap", "event", meter[0], lan_back, meter[1], kw(meter, 14) * 61 / 60)] += 1
    for device in MODBUS_DEVICES:  # offline at the third failed poll, 14:02
        expected[("offline", "raised", device, local_ms(25, 14, 2), None, None)] += 1
        expected[("offline", "cleared", device, lan_back, None, None)] += 1
    assert seen == expected
    windows = {_window(a) for a in month.alarms if a["kind"] == "data_gap"}
    assert windows == {(local_ms(10, 9, 59), down), (local_ms(25, 13, 59), lan_back)}


def _detail(alarm: Record) -> Record:
    detail = alarm["detail"]
    assert isinstance(detail, dict)
    return detail


def _quantity(alarm: Record) -> object:
    return _detail(alarm).get("quantity")


def _energy(alarm: Record) -> Decimal | None:
    energy = _detail(alarm).get("energy")
    return None if energy is None else num(energy)


def _window(alarm: Record) -> tuple[object, object]:
    return _detail(alarm).get("from_ms"), _detail(alarm).get("until_ms")
