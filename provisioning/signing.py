"""The gateway's Ed25519 signing key (buffer.keys makes and loads it; this owns its files)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from buffer.keys import SigningKeyError, fingerprint, load_or_create, public_key_text
from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, ensure_attrs, ensure_file
from provisioning.target import Ids, Target


@dataclass(frozen=True)
class SigningKey:
    changes: list[Change]
    key_id: str | None  # None in a dry run before the key exists
    public: str | None
    fingerprint: str | None


def refuse_unsafe(path: Path, what: str) -> None:
    """A private key with any permission for group or others is refused, with the fix."""
    if not path.exists():
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ProvisionError(
            f"{path}: the {what} is readable by others (mode {mode:04o}); run `chmod 600 {path}` "
            "and provision again (if others may have copied it, delete it instead: a new key is "
            "made and must be registered again)",
            Exit.UNSAFE_KEY,
        )


def check_signing_key(path: Path) -> None:
    """An existing signing key must load as an Ed25519 key (it is never replaced silently)."""
    if not path.exists():
        return
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, TypeError, ValueError) as exc:
        raise ProvisionError(
            f"{path}: cannot load the signing key ({exc}); move it away to make a new one "
            "(and register the new key)",
            Exit.UNSAFE_KEY,
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvisionError(f"{path}: not an Ed25519 private key", Exit.UNSAFE_KEY)


def ensure_signing_key(target: Target, owner: Ids | None) -> SigningKey:
    path = target.path(layout.SIGNING_KEY)
    refuse_unsafe(path, "private signing key")
    if target.dry_run and not path.exists():
        return SigningKey([Change(path, "created")], None, None, None)
    try:
        signer, created = load_or_create(path)
    except SigningKeyError as exc:
        raise ProvisionError(str(exc), Exit.UNSAFE_KEY) from None
    key_change = ensure_attrs(target, path, 0o600, owner)
    if created:
        key_change = Change(path, "created")
    pub = target.path(layout.SIGNING_PUB)
    text = public_key_text(signer.public)
    pub_change = ensure_file(target, pub, f"{text}\n".encode("ascii"), 0o644, owner)
    if created:
        pub_change = Change(pub, "created")
    return SigningKey([key_change, pub_change], signer.kid, text, fingerprint(signer.public))
