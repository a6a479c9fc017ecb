"""A configuration applied by the platform's `config` command, with automatic rollback.

The provisioned file (`--config`, in /etc/cgw, read-only to the service) stays as IT wrote it. A
configuration sent by command is kept in the data directory, `{data_dir}/config/gateway.toml`, and
used instead of it from the next start on; relative paths in it are taken from the provisioned
file's folder, and it must keep the gateway id, site and data directory. Applying it is a restart
on probation: `pending.json` says which command it came from; the gateway must come up healthy
within `[commands] probation_s` or the previous configuration is put back (`rolled-back.json` says
why) and the gateway restarts with it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, load, loads

log = logging.getLogger("cgw.config")

FOLDER = "config"
CURRENT = "gateway.toml"
PREVIOUS = "previous.toml"
PENDING = "pending.json"
ROLLED_BACK = "rolled-back.json"
KEPT = {"gateway_id": "gateway.id", "site": "gateway.site", "data_dir": "gateway.data_dir"}


def folder(config: Config) -> Path:
    return config.data_dir / FOLDER


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def effective(base_path: Path, repair: bool = False) -> Config:
    """The configuration in use: the one applied by command if there is one and it loads, else
    the provisioned file. With `repair` (the daemon, not the tools that only read) one that no
    longer loads is rolled back here and now."""
    base = load(base_path)
    applied = folder(base) / CURRENT
    if not applied.exists():
        return base
    try:
        config = validate(applied.read_text(encoding="utf-8"), base)
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        log.error("the configuration applied by command does not load: %s", exc)
        if not repair:
            return base
        roll_back(base, f"it does not load: {exc}")
        return effective(base_path, repair)
    if repair:
        log.info("running with the configuration applied by command (%s)", applied)
    return config


def validate(text: str, base: Config) -> Config:
    """A configuration sent by command, checked as the file would be, and against the base."""
    try:
        config = loads(text, base.path)
    except ConfigError as exc:
        raise ConfigError("the configuration sent by command", exc.key, exc.message) from None
    for name, key in KEPT.items():
        if getattr(config, name) != getattr(base, name):
            raise ConfigError(
                "the configuration sent by command",
                key,
                f"must stay {getattr(base, name)} (provisioned), not {getattr(config, name)}",
            )
    return config


@dataclass(frozen=True)
class Pending:
    command_id: str
    applied_ms: int


def stage(base: Config, text: str, command_id: str, now_ms: int) -> None:
    """Keep what runs now as the previous configuration, then put `text` (validated) in place
    with the pending mark; the caller restarts the gateway."""
    where = folder(base)
    current = where / CURRENT
    if current.exists():
        _write(where / PREVIOUS, current.read_bytes())
    else:
        (where / PREVIOUS).unlink(missing_ok=True)  # none: back to the provisioned file
    _write(where / PENDING, json.dumps({"command_id": command_id, "applied_ms": now_ms}).encode())
    _write(current, text.encode("utf-8"))


def pending(config: Config) -> Pending | None:
    data = _read_json(folder(config) / PENDING)
    if data is None:
        return None
    return Pending(str(data.get("command_id", "")), int(data.get("applied_ms", 0)))


def confirm(config: Config) -> None:
    """The gateway came up healthy with the applied configuration: it stays."""
    (folder(config) / PENDING).unlink(missing_ok=True)


def roll_back(config: Config, reason: str) -> None:
    """Put the previous configuration back and say why, for the reply after the restart."""
    where = folder(config)
    marker = _read_json(where / PENDING) or {}
    if (where / PREVIOUS).exists():
        os.replace(where / PREVIOUS, where / CURRENT)
    else:
        (where / CURRENT).unlink(missing_ok=True)
    _write(where / ROLLED_BACK, json.dumps({**marker, "reason": reason}).encode())
    (where / PENDING).unlink(missing_ok=True)
    log.error("configuration of command %s rolled back: %s", marker.get("command_id"), reason)


def rollback(config: Config) -> dict[str, Any] | None:
    """A rollback not yet reported to the platform: its command id and reason."""
    return _read_json(folder(config) / ROLLED_BACK)


def reported(config: Config) -> None:
    """The rollback's reply went out."""
    (folder(config) / ROLLED_BACK).unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s: unreadable (%s)", path, exc)
        return {}
    return data if isinstance(data, dict) else {}
