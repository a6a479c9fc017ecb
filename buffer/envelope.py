"""Envelopes: the signed, hash-chained unit the gateway stores and publishes (docs/CONTRACT.md)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from buffer.canonical import Raw, canonical
from buffer.keys import Signer

CONTRACT_VERSION = 1
GENESIS_PREV = "0" * 64


@dataclass(frozen=True)
class Sealed:
    seq: int
    stream: str
    body: bytes  # exactly what is stored and published
    chain_hash: str  # SHA-256 (hex) of the signed bytes: the next envelope's `prev`


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def seal(
    signer: Signer,
    *,
    gateway: str,
    site: str,
    stream: str,
    seq: int,
    prev: str,
    created_ms: int,
    records: Sequence[bytes],
) -> Sealed:
    """Sign canonical record bytes into an envelope. The signature covers the JCS form without `sig`."""
    unsigned = {
        "v": CONTRACT_VERSION,
        "gateway": gateway,
        "site": site,
        "stream": stream,
        "seq": seq,
        "prev": prev,
        "kid": signer.kid,
        "created": created_ms,
        # One Raw for the whole array: the same bytes as a list of Raw records, built in one join.
        "records": Raw(b"[" + b",".join(records) + b"]"),
    }
    signed_bytes = canonical(unsigned)
    body = canonical({**unsigned, "sig": b64url(signer.sign(signed_bytes))})
    return Sealed(seq, stream, body, hashlib.sha256(signed_bytes).hexdigest())
