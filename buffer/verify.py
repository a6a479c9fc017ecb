"""Verify envelopes: signatures, the hash chain and the sequence (docs/CONTRACT.md, "Verifying").

Small and self-contained so that the platform can import it: it needs only the public keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Problem:
    gateway: str
    seq: int | None
    kind: str  # malformed, not_canonical, unknown_key, bad_signature, chain_break, conflict
    detail: str


@dataclass
class GatewayReport:
    envelopes: int = 0
    records: int = 0
    duplicates: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)
    devices: dict[str, int] = field(default_factory=dict)

    @property
    def missing_count(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)

    @property
    def completeness(self) -> float:
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
                    "completeness": round(r.completeness, 6),
                    "devices": r.devices,
                }
                for gw, r in self.gateways.items()
            },
            "problems": [p.__dict__ for p in self.problems],
        }


@dataclass(frozen=True)
class _Checked:
    seq: int
    prev: str
    chain_hash: str
    body: bytes


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check(
    body: bytes, keys: Mapping[str, Ed25519PublicKey]
) -> tuple[str, dict, _Checked] | Problem:
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
            gateway, seq, "malformed", f"contract version {envelope['v']} is not {CONTRACT_VERSION}"
        )
    unsigned = {k: v for k, v in envelope.items() if k != "sig"}
    try:
        signed_bytes = canonical(unsigned)
        if canonical(envelope) != body.strip():
            return Problem(
                gateway, seq, "not_canonical", "bytes differ from the JCS form of their content"
            )
    except CanonicalError as exc:
        return Problem(gateway, seq, "malformed", str(exc))
    key = keys.get(envelope["kid"])
    if key is None:
        return Problem(gateway, seq, "unknown_key", f"key id {envelope['kid']!r} is not registered")
    try:
        key.verify(_b64url_decode(envelope["sig"]), signed_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        return Problem(gateway, seq, "bad_signature", "signature does not verify")
    checked = _Checked(
        envelope["seq"], envelope["prev"], hashlib.sha256(signed_bytes).hexdigest(), body
    )
    return gateway, envelope, checked


def verify(bodies: Iterable[bytes], keys: Mapping[str, Ed25519PublicKey]) -> Report:
    report = Report()
    accepted: dict[str, dict[int, _Checked]] = {}
    for body in bodies:
        result = _check(body, keys)
        if isinstance(result, Problem):
            report.problems.append(result)
            continue
        gateway, envelope, checked = result
        gw = report.gateways.setdefault(gateway, GatewayReport())
        by_seq = accepted.setdefault(gateway, {})
        previous = by_seq.get(checked.seq)
        if previous is not None:
            if previous.body == checked.body.strip():
                gw.duplicates += 1
            else:
                report.problems.append(
                    Problem(
                        gateway, checked.seq, "conflict", "two different envelopes with one seq"
                    )
                )
            continue
        by_seq[checked.seq] = _Checked(
            checked.seq, checked.prev, checked.chain_hash, checked.body.strip()
        )
        gw.envelopes += 1
        gw.records += len(envelope["records"])
        for record in envelope["records"]:
            device = record.get("device", "?") if isinstance(record, dict) else "?"
            gw.devices[device] = gw.devices.get(device, 0) + 1
    for gateway, by_seq in accepted.items():
        gw = report.gateways[gateway]
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
                    Problem(gateway, after, "chain_break", f"prev does not match envelope {before}")
                )
    return report
