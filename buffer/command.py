"""Downlink commands and their replies: signed JSON in RFC 8785 form (docs/COMMANDS.md).

Small and self-contained, like the verifier, so that the platform can import it to sign commands
and check replies. A command names its gateway, site and command, so a signed command cannot be
replayed to another gateway or as another command; `expires` and a `nonce` the gateway remembers
until then stop a replay of the same command.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from buffer.canonical import CanonicalError, canonical
from buffer.keys import Signer

VERSION = 1
NAMES = ("ping", "resend", "config", "scan")
MAX_LIFETIME_MS = 24 * 3600 * 1000  # `expires` - `issued`, at most
CLOCK_SKEW_MS = 5 * 60 * 1000  # `issued` may be this far ahead of the gateway's clock
FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "id": str,
    "name": str,
    "gateway": str,
    "site": str,
    "issued": int,
    "expires": int,
    "nonce": str,
    "args": dict,
    "kid": str,
    "sig": str,
}


@dataclass(frozen=True)
class Command:
    id: str
    name: str
    issued: int
    expires: int
    nonce: str
    args: dict[str, Any]
    kid: str


@dataclass(frozen=True)
class Rejection:
    """Why a command is not carried out. `reason` is one of the codes in docs/COMMANDS.md."""

    reason: str
    detail: str
    id: str | None = None  # the command's id when it could be read


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(text: str) -> bytes:
    """Strict, as in buffer/verify.py: one spelling per signature."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(raw) != text:
        raise ValueError("not the canonical base64url of its bytes")
    return raw


def sign_command(
    signer: Signer,
    *,
    name: str,
    gateway: str,
    site: str,
    args: Mapping[str, Any] | None = None,
    issued_ms: int,
    lifetime_ms: int = 5 * 60 * 1000,
    command_id: str | None = None,
    nonce: str | None = None,
) -> bytes:
    """A signed command's payload (the platform's side)."""
    unsigned = {
        "v": VERSION,
        "id": command_id or secrets.token_hex(8),
        "name": name,
        "gateway": gateway,
        "site": site,
        "issued": issued_ms,
        "expires": issued_ms + lifetime_ms,
        "nonce": nonce or secrets.token_hex(16),
        "args": dict(args or {}),
        "kid": signer.kid,
    }
    return canonical({**unsigned, "sig": _b64url(signer.sign(canonical(unsigned)))})


def check_command(
    payload: bytes,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    gateway: str,
    site: str,
    name: str,
    now_ms: int,
) -> Command | Rejection:
    """A command that is well formed, meant for this gateway under this name, signed by a pinned
    key and within its validity; else why not. Replays are the caller's to check (`nonce`)."""
    try:
        command = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejection("malformed", f"not JSON: {exc}")
    if not isinstance(command, dict):
        return Rejection("malformed", "not a JSON object")
    command_id = command.get("id") if isinstance(command.get("id"), str) else None
    if "sig" not in command:
        return Rejection("unsigned", "the command has no signature", command_id)
    for field, kind in FIELDS.items():
        value = command.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return Rejection(
                "malformed", f"field {field!r} missing or of the wrong type", command_id
            )
    if command["v"] != VERSION:
        return Rejection("malformed", f"version {command['v']} is not {VERSION}", command_id)
    if len(command["nonce"]) < 16 or len(command["id"]) > 128:
        return Rejection("malformed", "nonce shorter than 16 characters or id too long", command_id)
    target = (command["gateway"], command["site"], command["name"])
    if target != (gateway, site, name):
        return Rejection(
            "wrong_target",
            f"signed for gateway {target[0]}, site {target[1]}, command {target[2]}; "
            f"this is gateway {gateway}, site {site}, command {name}",
            command_id,
        )
    key = keys.get(command["kid"])
    if key is None:
        return Rejection("unknown_key", f"key id {command['kid']} is not pinned here", command_id)
    unsigned = {k: v for k, v in command.items() if k != "sig"}
    try:
        key.verify(_b64url_decode(command["sig"]), canonical(unsigned))
    except (InvalidSignature, binascii.Error, ValueError, CanonicalError):
        return Rejection("bad_signature", "the signature does not verify", command_id)
    issued, expires = command["issued"], command["expires"]
    if expires <= now_ms:
        return Rejection("expired", f"expired {now_ms - expires} ms ago", command_id)
    if issued > now_ms + CLOCK_SKEW_MS:
        return Rejection("not_yet_valid", f"issued {issued - now_ms} ms in the future", command_id)
    if not 0 < expires - issued <= MAX_LIFETIME_MS:
        return Rejection(
            "malformed", f"lifetime must be between 1 ms and {MAX_LIFETIME_MS} ms", command_id
        )
    return Command(
        command["id"], name, issued, expires, command["nonce"], command["args"], command["kid"]
    )


def sign_reply(signer: Signer, reply: Mapping[str, Any]) -> bytes:
    """A reply signed by the gateway's key, in the same form as a command."""
    unsigned = {**reply, "v": VERSION, "kid": signer.kid}
    return canonical({**unsigned, "sig": _b64url(signer.sign(canonical(unsigned)))})


def check_reply(payload: bytes, keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any] | None:
    """The reply if it is signed by one of `keys` (the platform's side), else None."""
    try:
        reply = json.loads(payload)
        key = keys[reply["kid"]]
        unsigned = {k: v for k, v in reply.items() if k != "sig"}
        key.verify(_b64url_decode(reply["sig"]), canonical(unsigned))
    except (ValueError, KeyError, TypeError, InvalidSignature, binascii.Error, CanonicalError):
        return None
    return dict(reply)
