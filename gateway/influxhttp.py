"""HTTP writes to an InfluxDB 2.x write API with influxdb-client, synchronously: a write returns
only when the server answered 204, or raises `WriteError` saying whether to try again."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.config import InfluxConfig

# Worth retrying: the server or the way to it is down or busy, or it is misconfigured (credentials,
# bucket) and an operator can fix it. Any other 4xx refuses the data itself, for good.
RETRY_STATUS = frozenset({401, 403, 404, 408, 425, 429})
TOO_LARGE = 413


class WriteError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retry(self) -> bool:
        return self.status is None or self.status in RETRY_STATUS or self.status >= 500

    @property
    def too_large(self) -> bool:
        return self.status == TOO_LARGE


class Writer(Protocol):
    def write(self, lines: list[bytes]) -> None: ...

    def close(self) -> None: ...


class HttpWriter:
    """influxdb-client's synchronous write API; no retries of its own (the sink retries)."""

    def __init__(self, settings: InfluxConfig) -> None:
        # Imported here: a gateway without the sink does not pay for loading the client.
        from influxdb_client import InfluxDBClient, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        self.precision: Any = WritePrecision.MS  # a str constant, typed as the enum it is not
        self.client = InfluxDBClient(
            url=settings.url,
            token=settings.token or "",  # empty: no Authorization header
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            verify_ssl=settings.verify_tls,
            ssl_ca_cert=str(settings.ca_file) if settings.ca_file else None,
            retries=False,
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[bytes]) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.api.write(
                bucket=self.settings.bucket,
                org=self.settings.org,
                record=b"\n".join(lines),
                write_precision=self.precision,
            )
        except ApiException as exc:
            raise WriteError(_api_message(exc), exc.status) from None
        except (HTTPError, OSError) as exc:
            raise WriteError(_network_message(self.settings.url, exc)) from None

    def close(self) -> None:
        self.client.close()


def _api_message(exc: Any) -> str:
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
    detail = " ".join(str(body or "").split())[:300]
    return f"HTTP {exc.status} {exc.reason or ''}".rstrip() + (f": {detail}" if detail else "")


def _network_message(url: str, exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    if "Connection refused" in text:
        text = "connection refused (is InfluxDB running?)"
    elif "timed out" in text.lower():
        text = "timed out"
    return f"cannot reach {url}: {text}"
