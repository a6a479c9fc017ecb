"""The commissioning page's local password: a scrypt hash on the gateway, sessions that expire,
a CSRF token per session, and a login rate limit per client address."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

# scrypt at N=2^14, r=8, p=1: 16 MB and ~50 ms on a Pi 4 per login; a hash leaked from the SD
# card costs an attacker as much per guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
LOGIN_ATTEMPTS = 5  # failures allowed per client address ...
LOGIN_WINDOW_S = 60.0  # ... within this
MAX_SESSIONS = 32


class PasswordFileError(ValueError):
    pass


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash`, base64 parts: the line `cgw web-password` prints."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_hash_line(line: str) -> tuple[int, int, int, bytes, bytes]:
    try:
        kind, n, r, p, salt, digest = line.strip().split("$")
        if kind != "scrypt":
            raise ValueError(kind)
        return int(n), int(r), int(p), base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:
        raise PasswordFileError("not a password hash (make one with `cgw web-password`)") from None


def verify_password(password: str, line: str) -> bool:
    n, r, p, salt, digest = check_hash_line(line)
    candidate = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2**26
    )
    return hmac.compare_digest(candidate, digest)


@dataclass
class Session:
    csrf: str
    expires: float


class Sessions:
    """Session tokens (cookie) -> CSRF token and expiry; an idle session expires."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, now: float | None = None) -> tuple[str, str]:
        now = time.monotonic() if now is None else now
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._lock:
            self._sessions = {t: s for t, s in self._sessions.items() if s.expires > now}
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[min(self._sessions, key=lambda t: self._sessions[t].expires)]
            self._sessions[token] = Session(csrf, now + self.idle_s)
        return token, csrf

    def get(self, token: str | None, now: float | None = None) -> Session | None:
        """The live session of `token` (its idle time starts again), else None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            session = self._sessions.get(token or "")
            if session is None or session.expires <= now:
                self._sessions.pop(token or "", None)
                return None
            session.expires = now + self.idle_s
            return session

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


class LoginLimiter:
    """At most LOGIN_ATTEMPTS failed logins per address in LOGIN_WINDOW_S."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked_for(self, address: str, now: float | None = None) -> float:
        """Seconds until `address` may try again (0 when it may now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._failures.get(address, []) if now - t < LOGIN_WINDOW_S]
            self._failures[address] = recent
            if len(recent) < LOGIN_ATTEMPTS:
                return 0.0
            return LOGIN_WINDOW_S - (now - recent[0])

    def failed(self, address: str, now: float | None = None) -> None:
        with self._lock:
            self._failures.setdefault(address, []).append(time.monotonic() if now is None else now)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
