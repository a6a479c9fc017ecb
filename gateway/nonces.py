"""The nonces of commands carried out, kept until their command expires, across restarts: a
command replayed, even after a restart, is recognised. A small JSON file in the data directory,
replaced atomically; commands are rare, so it stays small."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("cgw.commands")

MAX_KEPT = 10_000


class NonceStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, int] = {}  # nonce -> its command's expiry (ms)
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            self._seen = {str(k): int(v) for k, v in loaded.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            # Unreadable: every command still carries an expiry, so a replay is possible only
            # until the commands seen before expire. Said, not hidden.
            log.error(
                "%s: cannot read the nonces of past commands (%s); starting afresh", path, exc
            )

    def seen(self, nonce: str) -> bool:
        return nonce in self._seen

    def add(self, nonce: str, expires_ms: int, now_ms: int) -> None:
        """Remember a nonce (saved before the command is carried out)."""
        self._seen = {n: e for n, e in self._seen.items() if e > now_ms}
        self._seen[nonce] = expires_ms
        while len(self._seen) > MAX_KEPT:
            del self._seen[min(self._seen, key=self._seen.__getitem__)]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._seen, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
