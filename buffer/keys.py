"""The gateway's Ed25519 signing key: created once, kept private, identified by a key id."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningKeyError(Exception):
    """The key file is missing, unreadable or unsafe; the message says how to fix it."""


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(raw_public(public)).hexdigest()[:16]


def fingerprint(public: Ed25519PublicKey) -> str:
    """The whole SHA-256 of the raw public key, as `SHA256:` and base64 (the OpenSSH style)."""
    digest = hashlib.sha256(raw_public(public)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def public_key_text(public: Ed25519PublicKey) -> str:
    """The public key as the platform registers it: base64 of the raw 32 bytes."""
    return base64.b64encode(raw_public(public)).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from base64 of the raw 32 bytes, or from a PEM block."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey
    kid: str

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def _check_private_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"{path}: the private signing key is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}` and start again"
        )


def load_or_create(path: Path) -> tuple[Signer, bool]:
    """Load the signing key at `path`, creating it (mode 0600) if absent. Returns (signer, created)."""
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        pub_path = path.with_suffix(".pub")
        pub_path.write_text(public_key_text(private.public_key()) + "\n", encoding="ascii")
        created = True
    _check_private_mode(path)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"{path}: cannot load the signing key: {exc}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 private key")
    return Signer(loaded, key_id(loaded.public_key())), created
