"""The broker URL of an inventory row: mqtts://host[:port] (TLS) or mqtt://host[:port]."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"mqtts": 8883, "mqtt": 1883}


@dataclass(frozen=True)
class Broker:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_broker(text: str) -> Broker:
    """Raises ValueError with a message for IT."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a broker URL ({exc})") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"{text!r}: the broker URL starts with mqtts:// (TLS, port 8883) "
            "or mqtt:// (no TLS, port 1883)"
        )
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is not a port")
    if not parts.hostname:
        raise ValueError(f"{text!r}: no host name")
    if parts.username or parts.password:
        raise ValueError(f"{text!r}: no user name in the URL; use the mqtt_username column")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: only scheme://host:port, no path or query")
    return Broker(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])
