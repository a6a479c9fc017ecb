"""What a daemon's buffer holds, read the way the platform would see it."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from buffer.keys import key_id
from buffer.verify import GatewayReport, Verifier


def buffered_records(db: Path) -> list[dict[str, Any]]:
    """Every record in the buffer, sealed or still pending, in time order (interval records by
    their start)."""
    with sqlite3.connect(db) as conn:
        pending = [json.loads(r) for (r,) in conn.execute("SELECT record FROM pending")]
        sealed = [
            r for (b,) in conn.execute("SELECT body FROM bodies") for r in json.loads(b)["records"]
        ]
    return sorted(pending + sealed, key=lambda r: int(r.get("ts", r.get("start_ms", 0))))


def readings_of(records: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("device") == device and "quality" in r]


def verified(data_dir: Path, bodies: list[bytes], gateway: str = "gw-test") -> GatewayReport:
    """Check delivered envelopes as the platform does, with the gateway's own public key: the
    report of `gateway`, after asserting that no envelope had a problem."""
    key = Ed25519PublicKey.from_public_bytes(
        base64.b64decode((data_dir / "signing.pub").read_text())
    )
    verifier = Verifier({key_id(key): key})
    for body in bodies:
        verifier.add(body)
    report = verifier.report()
    assert report.problems == []
    return report.gateways[gateway]


def delivered_records(bodies: list[bytes], stream: str) -> list[dict[str, Any]]:
    """The records of one stream, in the order the gateway sealed them."""
    envelopes = sorted((json.loads(b) for b in bodies), key=lambda e: int(e["seq"]))
    return [r for e in envelopes if e["stream"] == stream for r in e["records"]]
