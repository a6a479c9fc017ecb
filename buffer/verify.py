"""Verify envelopes: signatures, the hash chain and the sequence (docs/CONTRACT.md, "Verifying").

Small and self-contained so that the platform can import it: it needs only the registered public
keys. Feed it messages as they arrive (`Verifier.add`, with their topic when known), then read the
`report()`: per gateway the envelopes and records received, missing seq ranges, identical copies
(at-least-once re-sends, or replays), completeness; per device the readings and, when the
gateway's retained `meta` was seen (`add_meta`), the readings its poll interval owed; and every
message that could not be trusted, with its reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from buffer.canonical import CanonicalError, canonical
from buffer.envelope import CONTRACT_VERSION, GENESIS_PREV

REQUIRED = {
    "v": int,
    "gateway": str,
    "site": str,
    "stream": str,
    "seq": int,
    "prev": str,
    "kid": str,
    "created": int,
    "records": list,
    "sig": str,
}
STREAMS = ("readings", "intervals", "alarms")
REQUIRED_RATE = 0.9  # the upload rate the zero-carbon-factory specifications ask for


@dataclass(frozen=True)
class Problem:
    gateway: str
    seq: int | None
    # malformed, not_canonical, unknown_key, wrong_key, bad_signature, wrong_topic,
    # chain_break, conflict
    kind: str
    detail: str


@dataclass
class DeviceReport:
    readings: int = 0
    ok: int = 0  # readings with values (quality ok or out_of_range)
    first_ts: int | None = None
    last_ts: int | None = None
    interval_s: float | None = None  # from the gateway's meta, when seen

    @property
    def expected(self) -> int | None:
        """Readings the poll interval owes the span from the first to the last one seen."""
        if self.interval_s is None or self.first_ts is None or self.last_ts is None:
            return None
        return round((self.last_ts - self.first_ts) / 1000 / self.interval_s) + 1

    @property
    def completeness(self) -> float | None:
        expected = self.expected
        return None if not expected else min(1.0, self.readings / expected)

    def as_dict(self) -> dict[str, object]:
        rate = self.completeness
        return {
            "readings": self.readings,
            "ok": self.ok,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "interval_s": self.interval_s,
            "expected": self.expected,
            "completeness": None if rate is None else round(rate, 6),
            "meets_required": None if rate is None else rate >= REQUIRED_RATE,
        }


@dataclass
class GatewayReport:
    envelopes: int = 0
    records: int = 0
    duplicates: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)
    devices: dict[str, DeviceReport] = field(default_factory=dict)

    @property
    def missing_count(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)

    @property
    def completeness(self) -> float:
        """Envelopes received of those sealed from the first to the last seq seen."""
        if self.first_seq is None or self.last_seq is None:
            return 0.0
        return self.envelopes / (self.last_seq - self.first_seq + 1)


@dataclass
class Report:
    gateways: dict[str, GatewayReport] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return bool(self.problems)

    @property
    def gaps(self) -> bool:
        return any(g.missing for g in self.gateways.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": not self.tampered and not self.gaps,
            "gateways": {
                gw: {
                    "envelopes": r.envelopes,
                    "records": r.records,
                    "duplicates": r.duplicates,
                    "first_seq": r.first_seq,
                    "last_seq": r.last_seq,
                    "missing": [list(m) for m in r.missing],
                    "missing_envelopes": r.missing_count,
                    "completeness": round(r.completeness, 6),
                    "meets_required": r.completeness >= REQUIRED_RATE,
                    "devices": {d: dev.as_dict() for d, dev in sorted(r.devices.items())},
                }
                for gw, r in sorted(self.gateways.items())
            },
            "problems": [p.__dict__ for p in self.problems],
        }


@dataclass(frozen=True)
class _Checked:
    """What is kept of an accepted envelope: enough for the chain and to tell copies apart."""

    seq: int
    prev: str
    chain_hash: str
    digest: bytes  # SHA-256 of the message bytes


def _b64url_decode(text: str) -> bytes:
    """Strict: the decoder ignores the unused low bits of the last character, so other spellings
    of one signature would pass as other bytes of one envelope. Only the canonical one does."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != text:
        raise ValueError("not the canonical base64url of its bytes")
    return raw


def _with_sig(signed_bytes: bytes, sig: str) -> bytes:
    """The JCS form of the whole envelope from that of its unsigned part, without encoding the
    records again: `sig` sorts just before `site`, the last top-level key that can hold a
    `,"site":` (the members after it, `stream` and `v`, are plain). Envelopes with members this
    gateway does not write may differ; the caller then encodes the whole envelope to be sure."""
    at = signed_bytes.rfind(b',"site":')
    return signed_bytes[:at] + b',"sig":' + canonical(sig) + signed_bytes[at:]


def topic_parts(topic: str) -> tuple[str, str, str] | None:
    """(site, gateway, leaf) of `{prefix}/{site}/{gateway}/{leaf}`; None for other topics."""
    levels = topic.split("/")
    if len(levels) < 4:
        return None
    return levels[-3], levels[-2], levels[-1]


class Verifier:
    """Checks envelopes one by one; `report()` adds the chain and sequence over all of them.

    `keys`: key id -> registered public key. `owners` (optional): key id -> the gateway it is
    registered for; an envelope of another gateway signed with it is refused (`wrong_key`).
    """

    def __init__(
        self,
        keys: Mapping[str, Ed25519PublicKey],
        owners: Mapping[str, str] | None = None,
    ) -> None:
        self.keys = keys
        self.owners = owners or {}
        self._report = Report()
        self._accepted: dict[str, dict[int, _Checked]] = {}
        self._intervals: dict[str, dict[str, float]] = {}  # gateway -> device -> interval_s

    def add(self, body: bytes, topic: str | None = None) -> Problem | None:
        """One envelope (with the topic it arrived on, if known); its problem, if any."""
        result = self._check(body.strip(), topic)
        if isinstance(result, Problem):
            self._report.problems.append(result)
            return result
        gateway, envelope, checked = result
        gw = self._report.gateways.setdefault(gateway, GatewayReport())
        by_seq = self._accepted.setdefault(gateway, {})
        previous = by_seq.get(checked.seq)
        if previous is not None:
            if previous.digest == checked.digest:
                gw.duplicates += 1
                return None
            problem = Problem(
                gateway, checked.seq, "conflict", "two different envelopes with one seq"
            )
            self._report.problems.append(problem)
            return problem
        by_seq[checked.seq] = checked
        gw.envelopes += 1
        gw.records += len(envelope["records"])
        if envelope["stream"] == "readings":
            for record in envelope["records"]:
                self._count_reading(gateway, gw, record)
        return None

    def add_meta(self, payload: bytes, topic: str | None = None) -> None:
        """A gateway's retained meta: the poll interval of each device, for completeness.
        Unsigned information only: it never affects what is trusted."""
        try:
            meta = json.loads(payload)
            intervals = {d["id"]: float(d["interval_s"]) for d in meta["devices"]}
            gateway = str(meta["gateway"])
        except (ValueError, KeyError, TypeError):
            return
        self._intervals[gateway] = intervals

    def _count_reading(self, gateway: str, gw: GatewayReport, record: Any) -> None:
        if not isinstance(record, dict) or not isinstance(record.get("ts"), int):
            return
        device = gw.devices.setdefault(str(record.get("device", "?")), DeviceReport())
        device.readings += 1
        device.ok += record.get("quality") in ("ok", "out_of_range")
        ts = record["ts"]
        device.first_ts = ts if device.first_ts is None else min(device.first_ts, ts)
        device.last_ts = ts if device.last_ts is None else max(device.last_ts, ts)

    def _check(
        self, body: bytes, topic: str | None
    ) -> tuple[str, dict[str, Any], _Checked] | Problem:
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return Problem("?", None, "malformed", f"not JSON: {exc}")
        if not isinstance(envelope, dict):
            return Problem("?", None, "malformed", "not a JSON object")
        gateway: str = envelope["gateway"] if isinstance(envelope.get("gateway"), str) else "?"
        seq: int | None = envelope["seq"] if isinstance(envelope.get("seq"), int) else None
        for name, kind in REQUIRED.items():
            if not isinstance(envelope.get(name), kind) or isinstance(envelope.get(name), bool):
                return Problem(
                    gateway, seq, "malformed", f"field {name!r} missing or not {kind.__name__}"
                )
        if envelope["v"] != CONTRACT_VERSION:
            return Problem(
                gateway,
                seq,
                "malformed",
                f"contract version {envelope['v']} is not {CONTRACT_VERSION}",
            )
        unsigned = {k: v for k, v in envelope.items() if k != "sig"}
        try:
            signed_bytes = canonical(unsigned)
            if _with_sig(signed_bytes, envelope["sig"]) != body and canonical(envelope) != body:
                return Problem(
                    gateway, seq, "not_canonical", "bytes differ from the JCS form of their content"
                )
        except CanonicalError as exc:
            return Problem(gateway, seq, "malformed", str(exc))
        kid = envelope["kid"]
        key = self.keys.get(kid)
        if key is None:
            return Problem(gateway, seq, "unknown_key", f"key id {kid!r} is not registered")
        owner = self.owners.get(kid)
        if owner is not None and owner != gateway:
            return Problem(
                gateway, seq, "wrong_key", f"key id {kid} is registered for gateway {owner}"
            )
        try:
            key.verify(_b64url_decode(envelope["sig"]), signed_bytes)
        except (InvalidSignature, binascii.Error, ValueError):
            return Problem(gateway, seq, "bad_signature", "signature does not verify")
        if topic is not None:
            expected = (envelope["site"], gateway, envelope["stream"])
            if topic_parts(topic) != expected:
                return Problem(
                    gateway,
                    seq,
                    "wrong_topic",
                    f"arrived on {topic}, but is {'/'.join(expected)} (replayed elsewhere?)",
                )
        checked = _Checked(
            seq or 0,
            envelope["prev"],
            hashlib.sha256(signed_bytes).hexdigest(),
            hashlib.sha256(body).digest(),
        )
        return gateway, envelope, checked

    def report(self) -> Report:
        """The report so far: the sequence and chain checks over everything accepted."""
        report = Report(
            {gw: _copy(r) for gw, r in self._report.gateways.items()}, list(self._report.problems)
        )
        for gateway, by_seq in self._accepted.items():
            gw = report.gateways[gateway]
            for device_id, device in gw.devices.items():
                device.interval_s = self._intervals.get(gateway, {}).get(device_id)
            seqs = sorted(by_seq)
            gw.first_seq, gw.last_seq = seqs[0], seqs[-1]
            first = by_seq[seqs[0]]
            if first.seq == 1 and first.prev != GENESIS_PREV:
                report.problems.append(
                    Problem(gateway, 1, "chain_break", "seq 1 does not start the chain")
                )
            for before, after in itertools.pairwise(seqs):
                if after != before + 1:
                    gw.missing.append((before + 1, after - 1))
                elif by_seq[after].prev != by_seq[before].chain_hash:
                    report.problems.append(
                        Problem(
                            gateway, after, "chain_break", f"prev does not match envelope {before}"
                        )
                    )
        return report


def _copy(r: GatewayReport) -> GatewayReport:
    devices = {d: DeviceReport(**vars(dev)) for d, dev in r.devices.items()}
    return GatewayReport(r.envelopes, r.records, r.duplicates, devices=devices)


def verify(bodies: Iterable[bytes], keys: Mapping[str, Ed25519PublicKey]) -> Report:
    """Every envelope of `bodies` (no topics): the report."""
    verifier = Verifier(keys)
    for body in bodies:
        verifier.add(body)
    return verifier.report()
