"""The platform's public key, pinned for signed downlink commands (docs/COMMANDS.md).

Given once with --platform-key FILE (base64 of the raw Ed25519 key, as `cgw status` shows keys),
installed as /etc/cgw/platform.pub (0644 root:cgw); the config then names it in
`[commands] platform_key_file`. Without it the gateway accepts no commands.
"""

from __future__ import annotations

from pathlib import Path

from buffer.keys import key_id, load_public_key
from provisioning import layout
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, install_given
from provisioning.target import Ids, Target


def platform_key_source(target: Target, given: Path | None) -> Path | None:
    """Where the pinned key is read from now (checked); None when there is none."""
    source = given if given is not None else target.path(layout.PLATFORM_KEY)
    if given is None and not source.is_file():
        return None
    try:
        lines = [line for line in source.read_text(encoding="ascii").splitlines() if line.strip()]
        for line in lines:
            load_public_key(line)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProvisionError(
            f"--platform-key {source}: not base64 Ed25519 public keys, one a line ({exc})",
            Exit.USAGE,
        ) from None
    if not lines:
        raise ProvisionError(f"--platform-key {source}: the file is empty", Exit.USAGE)
    return source


def key_ids(source: Path) -> list[str]:
    lines = source.read_text(encoding="ascii").split()
    return [key_id(load_public_key(line)) for line in lines]


def ensure_platform_key(target: Target, given: Path | None, owner: Ids) -> Change | None:
    source = platform_key_source(target, given)
    if source is None:
        return None
    content = "\n".join(source.read_text(encoding="ascii").split()) + "\n"
    installed = target.path(layout.PLATFORM_KEY)
    return install_given(target, source, installed, content.encode("ascii"), 0o644, owner)
