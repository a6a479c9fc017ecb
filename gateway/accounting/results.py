"""Result records of the `intervals` stream: one per meter and one for the site, per period.

Amounts are computed from the ledger's integer ticks at publication, never summed from rounded
figures, so a month is exactly the sum of its intervals' energy and rounding happens once: energy
to 1e-6 of its unit (a milliwatt-hour), kgCO2e and kgce to the gram.
"""

from __future__ import annotations

import hashlib
import sqlite3
from decimal import Decimal

from buffer.canonical import canonical
from gateway.accounting.factors import Factor
from gateway.accounting.grid import Grid
from gateway.accounting.indicators import KG, KWH, MeterTotal, self_consumed, site_indicators
from gateway.accounting.ledger import Ledger, Row, ticks_per_unit
from gateway.accounting.settings import AccountingConfig, MeterConfig

GJ_PER_KWH = Decimal("0.0036")
FLAG_OK = "ok"
FLAG_GAP = "gap"
FLAG_ESTIMATED = "estimated"


class Factors:
    """The factors each meter uses, resolved once from the library and the config."""

    def __init__(self, config: AccountingConfig) -> None:
        library = config.factors
        self.emission: dict[str, Factor | None] = {}
        self.coal: dict[str, Factor | None] = {}
        for meter in config.meters:
            if meter.carrier is None:
                self.emission[meter.key] = self.coal[meter.key] = None
                continue
            if meter.emission_factor is not None:
                self.emission[meter.key] = library.get(meter.emission_factor)
            elif meter.role in ("pv", "wind", "grid_export"):
                self.emission[meter.key] = None  # generated here or sent out: no emission
            else:
                self.emission[meter.key] = library.emission(meter.carrier, config.grid_factor)
            self.coal[meter.key] = library.coal(meter.carrier)
        self.electricity_coal = library.coal("electricity")
        self.grid = library.get(config.grid_factor)


def amount(meter: MeterConfig, ticks: int) -> Decimal:
    """Ticks in the carrier's unit (products for a production counter)."""
    per_unit = ticks_per_unit(meter)
    in_meter_unit = Decimal(ticks * per_unit.denominator) / Decimal(per_unit.numerator)
    return in_meter_unit * meter.conversion


def kwh_of(meter: MeterConfig, carrier_amount: Decimal) -> Decimal | None:
    if meter.carrier == "electricity":
        return carrier_amount
    if meter.carrier in ("heat", "steam"):
        return carrier_amount / GJ_PER_KWH
    return None


def expected_readings(
    meter: MeterConfig, first_ms: int | None, start: int, end: int, now_ms: int
) -> int:
    """Readings a meter polled every interval_s owes a period, from its first reading on."""
    if first_ms is None:
        return 0
    span = min(end, now_ms) - max(start, first_ms)
    return max(0, int(span // int(meter.interval_s * 1000)))


def meter_total(
    meter: MeterConfig,
    row: Row | None,
    factors: Factors,
    expected: int,
    interval_readings: int | None = None,
) -> tuple[MeterTotal, dict[str, object]]:
    """A meter's totals and record over a period. `interval_readings`: what one interval owes,
    for a roll-up, which is flagged `gap` when it misses at least that many (a silent interval)."""
    ticks = row.ticks if row else 0
    carrier_amount = amount(meter, ticks)
    kwh = kwh_of(meter, carrier_amount)
    emission, coal = factors.emission[meter.key], factors.coal[meter.key]
    kgco2e = carrier_amount * emission.value if emission else Decimal(0)
    kgce = carrier_amount * coal.value if coal else Decimal(0)
    readings = row.readings if row else 0
    flags = set(row.flags) if row else set()
    missing = expected - readings
    if FLAG_ESTIMATED not in flags and (  # estimated: the energy of a gap was apportioned
        (readings == 0 and expected > 0)
        or (interval_readings is not None and missing >= max(interval_readings, 1))
    ):
        flags.add(FLAG_GAP)
    record: dict[str, object] = {
        "kind": "meter",
        "device": meter.device,
        "quantity": meter.quantity,
        "role": meter.role,
        "carrier": meter.carrier,
        "scope": meter.scope,
        "energy": float(carrier_amount.quantize(KWH)),
        "unit": meter.carrier_unit if meter.carrier else "products",
        "kwh": None if kwh is None else float(kwh.quantize(KWH)),
        "kgco2e": float(kgco2e.quantize(KG)),
        "kgce": float(kgce.quantize(KG)),
        "held_out": float(amount(meter, row.held_out if row else 0).quantize(KWH)),
        "factors": {
            "co2e": emission.as_record() if emission else None,
            "coal": coal.as_record() if coal else None,
        },
        "readings": readings,
        "expected": expected,
        "flags": sorted(flags) or [FLAG_OK],
    }
    total = MeterTotal(meter, carrier_amount, kwh, kgco2e, kgce, readings, expected)
    return total, record


class Publisher:
    """Turns due periods into records, each with the revision its content has reached."""

    def __init__(self, config: AccountingConfig, ledger: Ledger, grid: Grid) -> None:
        self.config = config
        self.ledger = ledger
        self.grid = grid
        self.factors = Factors(config)

    def records(
        self, db: sqlite3.Connection, period: str, start: int, now_ms: int
    ) -> list[dict[str, object]]:
        end = self.grid.period_end(start, period)
        rows = self.ledger.rows(db, start, end)
        head = {
            "period": period,
            "minutes": self.config.interval_min if period == "interval" else None,
            "start": self.grid.label(start),
            "start_ms": start,
            "end_ms": end,
        }
        totals: list[MeterTotal] = []
        out: list[dict[str, object]] = []
        # A meter that never answered owes readings from when the site's first one did.
        site_first = min((c.first_ms for c in self.ledger.channels if c.first_ms), default=None)
        interval_s = self.config.interval_min * 60
        for channel in self.ledger.channels:
            meter = channel.meter
            first = channel.first_ms if channel.first_ms is not None else site_first
            expected = expected_readings(meter, first, start, end, now_ms)
            owed = None if period == "interval" else int(interval_s // meter.interval_s)
            total, record = meter_total(meter, rows.get(meter.key), self.factors, expected, owed)
            totals.append(total)
            out.append({**head, **record})
        meters = [c.meter for c in self.ledger.channels]
        by_key = {m.key: m for m in meters}
        per_interval = (
            {k: amount(by_key[k], t) for k, t in ticks.items() if k in by_key}
            for _, ticks in self.ledger.interval_rows(db, start, end)
        )
        month = self.grid.label(start)[:7] if period == "month" else None
        coal = self.factors.electricity_coal
        site = site_indicators(
            totals,
            self_consumed(per_interval, meters),
            coal.value if coal else Decimal(0),
            self.config.green_certificates_kwh.get(month) if month else None,
        )
        flags = sorted({f for r in out for f in r["flags"] if f != FLAG_OK})  # type: ignore[attr-defined]
        grid = self.factors.grid
        site["factors"] = {
            "grid": grid.as_record(),
            "electricity_coal": coal.as_record() if coal else None,
        }
        out.append({**head, "kind": "site", **site, "flags": flags or [FLAG_OK]})
        revised = (self._revised(db, record, start) for record in out)
        return [record for record in revised if record is not None]

    def _revised(
        self, db: sqlite3.Connection, record: dict[str, object], start: int
    ) -> dict[str, object] | None:
        """The record with its revision: 0 the first time, +1 whenever its content changed;
        None when it is the same as last published."""
        who = f"{record.get('device', '')}|{record.get('quantity', '')}"
        key = f"{record['kind']}|{who}|{record['period']}|{start}"
        digest = hashlib.sha256(canonical(record)).hexdigest()
        row = db.execute("SELECT revision, digest FROM published WHERE key = ?", (key,)).fetchone()
        if row is not None and row[1] == digest:
            return None
        revision = 0 if row is None else row[0] + 1
        db.execute(
            "INSERT INTO published (key, start_ms, revision, digest) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET revision = excluded.revision, "
            "digest = excluded.digest",
            (key, start, revision, digest),
        )
        return {**record, "revision": revision}
