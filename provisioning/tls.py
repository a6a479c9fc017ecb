"""The MQTT client's TLS material in /etc/cgw/tls: an EC P-256 key made on the device and a CSR
for the platform to sign, or a certificate bundle IT was given (checked before it is installed)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, ensure_attrs, ensure_file, move_aside, write_atomic
from provisioning.signing import refuse_unsafe
from provisioning.target import ROOT, Ids, Target

BUNDLE_FILES = ("ca.pem", "client.pem", "client.key")  # client.key only if made elsewhere
TlsKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _public_der(item: TlsKey | x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return item.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_from_pem(pem: bytes, where: str, status: int = Exit.UNSAFE_KEY) -> TlsKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ProvisionError(
            f"{where}: the key is encrypted; the gateway needs it unencrypted", status
        ) from None
    except ValueError as exc:
        raise ProvisionError(f"{where}: not a usable private key ({exc})", status) from None
    if not isinstance(key, TlsKey):
        raise ProvisionError(f"{where}: use an EC, RSA or Ed25519 key for TLS", status)
    return key


def load_key(path: Path, status: int = Exit.UNSAFE_KEY) -> TlsKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot read: {exc.strerror}", status) from None
    return key_from_pem(pem, str(path), status)


def names(cert: x509.Certificate) -> set[str]:
    """The identities a certificate is for: its common names and DNS names."""
    found = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        found.update(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return found


def _subject(gateway_id: str, site: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, gateway_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, site),
        ]
    )


def make_csr(key: TlsKey, gateway_id: str, site: str) -> bytes:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(gateway_id, site))
        .sign(key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_current(path: Path, key: TlsKey, gateway_id: str, site: str) -> bool:
    """The CSR on disk is for this key and this gateway's subject."""
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
    except (OSError, ValueError):
        return False
    return (
        csr.is_signature_valid
        and csr.subject == _subject(gateway_id, site)
        and _public_der(csr) == _public_der(key)
    )


@dataclass(frozen=True)
class Bundle:
    ca: bytes
    cert: bytes
    key: bytes | None  # None: the certificate is for the key already on the device
    expires: datetime.datetime
    notes: tuple[str, ...]


def _bad(message: str) -> ProvisionError:
    return ProvisionError(message, Exit.BAD_BUNDLE)


def check_certificate(
    cert_pem: bytes, where: str, key: TlsKey, key_where: str, gateway_id: str, other_status: int
) -> tuple[x509.Certificate, list[str]]:
    """The certificate is for `key`, not expired, a client certificate, and for this gateway
    (else `other_status`)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise _bad(f"{where}: not a PEM certificate") from None
    if _public_der(cert) != _public_der(key):
        raise _bad(
            f"{where} is not the certificate of the key {key_where} (the public keys differ)"
        )
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        raise _bad(f"{where} expired on {cert.not_valid_after_utc:%Y-%m-%d}; ask for a new one")
    notes = []
    if cert.not_valid_before_utc > now:
        notes.append(
            f"{where} is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
            "check this device's clock"
        )
    if gateway_id not in names(cert):
        raise ProvisionError(
            f"{where} is for {', '.join(sorted(names(cert))) or 'no name'}, not gateway {gateway_id}",
            other_status,
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise _bad(f"{where} is not a TLS client certificate (no clientAuth usage)")
    except x509.ExtensionNotFound:
        pass
    return cert, notes


def check_bundle(folder: Path, device_key: Path, gateway_id: str) -> Bundle:
    """Refuse a bundle whose certificate is not for its key (or the device's), is expired, is for
    another gateway, or is not issued by a certificate in its ca.pem."""
    if not folder.is_dir():
        raise _bad(f"--cert-bundle {folder}: no such folder")
    missing = [n for n in BUNDLE_FILES[:2] if not (folder / n).is_file()]
    if missing:
        raise _bad(
            f"--cert-bundle {folder}: no {' or '.join(missing)} (it holds {', '.join(BUNDLE_FILES)})"
        )
    ca_pem = (folder / "ca.pem").read_bytes()
    cert_pem = (folder / "client.pem").read_bytes()
    key_path = folder / "client.key"
    key_pem = key_path.read_bytes() if key_path.is_file() else None
    if key_pem is None and not device_key.exists():
        raise _bad(
            f"--cert-bundle {folder} has no client.key and this device has no {device_key}: "
            "a certificate alone needs the key it was issued for"
        )
    key = load_key(key_path if key_pem is not None else device_key, Exit.BAD_BUNDLE)
    cert, notes = check_certificate(
        cert_pem,
        str(folder / "client.pem"),
        key,
        str(key_path if key_pem else device_key),
        gateway_id,
        Exit.BAD_BUNDLE,
    )
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise _bad(f"{folder / 'ca.pem'}: not PEM certificates") from None
    issued = False
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            issued = True
        except (ValueError, TypeError, InvalidSignature):  # not this one
            continue
    if not issued:
        raise _bad(
            f"{folder / 'client.pem'} is not issued by a certificate in {folder / 'ca.pem'} "
            f"(its issuer: {cert.issuer.rfc4514_string()})"
        )
    return Bundle(ca_pem, cert_pem, key_pem, cert.not_valid_after_utc, tuple(notes))


def check_installed(target: Target, gateway_id: str, force: bool) -> None:
    """An installed client.pem must belong to the key beside it and to this gateway."""
    key_path, cert_path = target.path(layout.TLS_KEY), target.path(layout.TLS_CERT)
    refuse_unsafe(key_path, "private TLS key")
    if key_path.exists():
        load_key(key_path)
    if not cert_path.exists():
        return
    if not key_path.exists():
        raise _bad(
            f"{cert_path} is installed but {key_path} is missing: install a bundle with its key"
        )
    try:
        check_certificate(
            cert_path.read_bytes(),
            str(cert_path),
            load_key(key_path),
            str(key_path),
            gateway_id,
            Exit.OTHER_GATEWAY,
        )
    except ProvisionError as exc:
        if not (force and exc.status == Exit.OTHER_GATEWAY):
            raise


@dataclass(frozen=True)
class Tls:
    changes: list[Change]
    csr: Path
    certificate: str  # "installed, valid until …" or "not yet installed"
    notes: tuple[str, ...]


def ensure_tls(
    target: Target, gateway_id: str, site: str, owner: Ids | None, bundle: Bundle | None
) -> Tls:
    key_path = target.path(layout.TLS_KEY)
    csr_path = target.path(layout.TLS_CSR)
    cert_path = target.path(layout.TLS_CERT)
    changes: list[Change] = []
    notes: list[str] = list(bundle.notes) if bundle else []
    if bundle is not None:
        changes.append(ensure_file(target, target.path(layout.TLS_CA), bundle.ca, 0o644, ROOT))
        if bundle.key is not None:
            changes.append(ensure_file(target, key_path, bundle.key, 0o600, owner))
        changes.append(ensure_file(target, cert_path, bundle.cert, 0o644, ROOT))
    elif cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if gateway_id not in names(cert):  # only with --force: the device becomes another gateway
            changes.append(
                move_aside(target, cert_path, cert_path.with_name("client.pem.previous"))
            )
            notes.append("the certificate of the previous gateway id was moved aside")
    key: TlsKey
    if bundle is not None and bundle.key is not None:  # (in a dry run it is not on disk yet)
        key = key_from_pem(bundle.key, "client.key of the bundle", Exit.BAD_BUNDLE)
    elif key_path.exists():
        changes.append(ensure_attrs(target, key_path, 0o600, owner))
        key = load_key(key_path)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        if not target.dry_run:
            write_atomic(key_path, pem, 0o600, target.owner(owner))
        changes.append(Change(key_path, "created"))
    if csr_current(csr_path, key, gateway_id, site):
        changes.append(ensure_attrs(target, csr_path, 0o644, ROOT))
    else:
        changes.append(ensure_file(target, csr_path, make_csr(key, gateway_id, site), 0o644, ROOT))
    certificate = "not yet installed"
    if bundle is not None:
        certificate = f"installed, valid until {bundle.expires:%Y-%m-%d}"
    elif cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if gateway_id in names(cert):
            certificate = f"installed, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    return Tls(changes, csr_path, certificate, tuple(notes))
