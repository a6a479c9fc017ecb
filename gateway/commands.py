"""Downlink commands, carried out in the daemon's main thread (docs/COMMANDS.md).

The uplink hands over what arrives on `{prefix}/{site}/{gateway}/cmd/{name}`; each command is
checked (signature by a pinned platform key, target, expiry, nonce) and answered on
`.../cmd/{name}/reply` with a reply signed by the gateway's key. Rejections are answered and logged
too, at most `LOG_REJECTIONS_PER_MIN` log lines a minute, so a flood cannot fill the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from buffer.command import Command, Rejection, check_command, sign_reply
from buffer.keys import Signer, key_id, load_public_key
from gateway.config import Config, ConfigError
from gateway.nonces import NonceStore

log = logging.getLogger("cgw.commands")

MAX_PER_MINUTE = 60  # commands looked at; more are dropped unanswered (and counted)
LOG_REJECTIONS_PER_MIN = 10
MAX_RESEND = 100_000  # envelopes one resend may ask for
MAX_SCAN_UNITS = 247


class CommandError(Exception):
    """A valid command that cannot be carried out: `reason` is the reply's code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Host(Protocol):
    """What the daemon does for commands."""

    def ping(self) -> dict[str, object]: ...

    def resend(self, first_seq: int, last_seq: int) -> dict[str, object]: ...

    def apply_config(self, text: str, command: Command) -> dict[str, object]: ...

    def scan(
        self, bus_id: str, units: list[int], done: Callable[[dict[str, object]], None]
    ) -> None: ...


@dataclass
class CommandStats:
    received: int = 0
    carried_out: int = 0
    rejected: int = 0
    dropped: int = 0  # over MAX_PER_MINUTE


def pinned_keys(texts: tuple[str, ...]) -> dict[str, Ed25519PublicKey]:
    keys = [load_public_key(text) for text in texts]
    return {key_id(k): k for k in keys}


class Commands:
    def __init__(
        self,
        config: Config,
        signer: Signer,
        host: Host,
        publish: Callable[[str, bytes], None],
        now_ms: Callable[[], int],
    ) -> None:
        self.config = config
        self.signer = signer
        self.host = host
        self.publish = publish  # (command name, reply payload)
        self.now_ms = now_ms
        self.keys = pinned_keys(config.commands.platform_keys)
        self.nonces = NonceStore(config.data_dir / "command-nonces.json")
        self.stats = CommandStats()
        self._window_start = 0.0
        self._in_window = 0
        self._logged_in_window = 0

    def handle(self, name: str, payload: bytes) -> None:
        """One message from `.../cmd/{name}`."""
        self.stats.received += 1
        now = time.monotonic()
        if now - self._window_start >= 60:
            self._window_start, self._in_window, self._logged_in_window = now, 0, 0
        self._in_window += 1
        if self._in_window > MAX_PER_MINUTE:
            if self._in_window == MAX_PER_MINUTE + 1:
                log.warning(
                    "more than %d commands in a minute: the rest of this minute's are dropped",
                    MAX_PER_MINUTE,
                )
            self.stats.dropped += 1
            return
        checked = check_command(
            payload,
            self.keys,
            gateway=self.config.gateway_id,
            site=self.config.site,
            name=name,
            now_ms=self.now_ms(),
        )
        if isinstance(checked, Command) and self.nonces.seen(checked.nonce):
            checked = Rejection("replayed", "this command was received before", checked.id)
        if isinstance(checked, Rejection):
            self._reject(name, checked)
            return
        # Remembered before it is carried out: a crash in between must not allow it twice.
        self.nonces.add(checked.nonce, checked.expires, self.now_ms())
        log.info("command %s %s from key %s", name, checked.id, checked.kid)
        try:
            outcome = self._carry_out(checked)
        except CommandError as exc:
            log.warning("command %s %s failed: %s: %s", name, checked.id, exc.reason, exc)
            self.reply(name, checked.id, "failed", reason=exc.reason, detail=str(exc))
            return
        if outcome is not None:
            status, result = outcome
            self.stats.carried_out += 1
            self.reply(name, checked.id, status, result=result)

    def _carry_out(self, command: Command) -> tuple[str, dict[str, object]] | None:
        args = command.args
        if command.name == "ping":
            return "ok", self.host.ping()
        if command.name == "resend":
            first, last = _integer(args, "from_seq", 1), _integer(args, "to_seq", 1)
            if last < first or last - first >= MAX_RESEND:
                raise CommandError(
                    "bad_args", f"from_seq..to_seq must be ascending, at most {MAX_RESEND}"
                )
            return "ok", self.host.resend(first, last)
        if command.name == "config":
            text = args.get("config")
            if not isinstance(text, str):
                raise CommandError("bad_args", "args.config must be the configuration's TOML text")
            try:
                return "accepted", self.host.apply_config(text, command)
            except ConfigError as exc:
                raise CommandError("invalid_config", str(exc)) from None
        if command.name == "scan":
            bus = args.get("bus")
            if not isinstance(bus, str):
                raise CommandError("bad_args", "args.bus must name a configured bus")
            units = _units(args.get("units", [1, 16]))

            def done(result: dict[str, object]) -> None:
                self.stats.carried_out += 1
                self.reply("scan", command.id, "ok", result=result)

            self.host.scan(bus, units, done)
            return None  # answered when the scan ends
        raise CommandError("unknown_command", f"no command {command.name!r} (see docs/COMMANDS.md)")

    def _reject(self, name: str, rejection: Rejection) -> None:
        self.stats.rejected += 1
        if self._logged_in_window < LOG_REJECTIONS_PER_MIN:
            self._logged_in_window += 1
            log.warning(
                "command %s %s rejected: %s: %s",
                name,
                rejection.id or "(no id)",
                rejection.reason,
                rejection.detail,
            )
        self.reply(name, rejection.id, "rejected", reason=rejection.reason, detail=rejection.detail)

    def reply(
        self,
        name: str,
        command_id: str | None,
        status: str,
        *,
        reason: str | None = None,
        detail: str | None = None,
        result: Mapping[str, object] | None = None,
    ) -> None:
        reply: dict[str, Any] = {
            "id": command_id,
            "name": name,
            "gateway": self.config.gateway_id,
            "site": self.config.site,
            "ts": self.now_ms(),
            "status": status,
            "reason": reason,
            "detail": detail,
            "result": dict(result) if result is not None else None,
        }
        self.publish(name, sign_reply(self.signer, reply))


def _integer(args: Mapping[str, Any], name: str, low: int) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise CommandError("bad_args", f"args.{name} must be an integer of at least {low}")
    return value


def _units(value: object) -> list[int]:
    """[first, last] of the unit ids to probe."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not 0 <= value[0] <= value[1] <= 247
        or value[1] - value[0] >= MAX_SCAN_UNITS
    ):
        raise CommandError("bad_args", "args.units must be [first, last] unit ids within 0..247")
    return list(range(value[0], value[1] + 1))
