"""The commissioning page's local password (docs/COMMISSIONING.md, "The commissioning page").

Given as the scrypt line `cgw web-password --output FILE` makes (never the password itself), with
--web-password-file FILE; installed as /etc/cgw/web.password, 0600 for the service user, and the
config gets `[web] password_file`. Without it the page stays off.
"""

from __future__ import annotations

import stat
from pathlib import Path

from gateway.web.auth import PasswordFileError, check_hash_line
from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, ensure_attrs, ensure_file
from provisioning.target import Ids, Target


def web_password_source(target: Target, given: Path | None) -> Path | None:
    """Where the password hash is read from now (checked); None when the page stays off."""
    source = given if given is not None else target.path(layout.WEB_PASSWORD)
    if given is None and not source.is_file():
        return None
    try:
        check_hash_line(source.read_text(encoding="ascii"))
        mode = stat.S_IMODE(source.stat().st_mode)
    except (OSError, UnicodeDecodeError, PasswordFileError) as exc:
        raise ProvisionError(f"--web-password-file {source}: {exc}", Exit.USAGE) from None
    if mode & 0o077:
        raise ProvisionError(
            f"--web-password-file {source} is readable by others (mode {mode:o}): "
            f"`chmod 600 {source}` (`cgw web-password --output FILE` makes it so)",
            Exit.UNSAFE_KEY,
        )
    return source


def ensure_web_password(target: Target, given: Path | None, owner: Ids | None) -> Change | None:
    source = web_password_source(target, given)
    if source is None:
        return None
    installed = target.path(layout.WEB_PASSWORD)
    if source == installed:
        return ensure_attrs(target, installed, 0o600, owner)
    content = source.read_text(encoding="ascii").strip() + "\n"
    return ensure_file(target, installed, content.encode("ascii"), 0o600, owner)
