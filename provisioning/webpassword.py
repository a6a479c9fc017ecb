"""The commissioning page's local password (docs/COMMISSIONING.md, "The commissioning page").

Given as the scrypt line `cgw web-password --output FILE` makes (never the password itself), with
--web-password-file FILE; installed as /etc/cgw/web.password, 0600 for the service user, and the
config gets `[web] password_file`. Without it the page stays off.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.web.auth import PasswordFileError, check_hash_line
from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, install_given
from provisioning.target import Ids, Target


def web_password_source(target: Target, given: Path | None) -> Path | None:
    """Where the password hash is read from now (checked); None when the page stays off."""
    source = given if given is not None else target.path(layout.WEB_PASSWORD)
    if given is None and not source.is_file():
        return None
    try:
        check_hash_line(source.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, PasswordFileError) as exc:
        raise ProvisionError(f"--web-password-file {source}: {exc}", Exit.USAGE) from None
    return source


@contextlib.contextmanager
def as_installed(source: Path | None) -> Iterator[Path | None]:
    """A private copy of the hash, as the gateway will find it (mode 600), for checking the
    config: the given file may sit on a FAT boot partition, where every file is world-readable."""
    if source is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="cgw-provision-") as folder:
        copy = Path(folder) / "web.password"
        copy.write_bytes(source.read_bytes())
        copy.chmod(0o600)
        yield copy


def ensure_web_password(target: Target, given: Path | None, owner: Ids | None) -> Change | None:
    source = web_password_source(target, given)
    if source is None:
        return None
    content = source.read_text(encoding="ascii").strip() + "\n"
    installed = target.path(layout.WEB_PASSWORD)
    return install_given(target, source, installed, content.encode("ascii"), 0o600, owner)
