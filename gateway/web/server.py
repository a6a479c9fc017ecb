"""The commissioning page's HTTP server (docs/COMMISSIONING.md, "The page"): its own threads, off
the hot path. It reads the finished view of `LiveState`; actions that need the buses (a scan) are
handed to the daemon's main loop and answered when done.

Security: only clients on loopback, private or link-local addresses; the local password (scrypt
hash) for actions and, unless `public_view`, for viewing; session cookies (HttpOnly,
SameSite=Strict) that expire when idle; a CSRF token on every POST; failed logins limited per
address; a Content-Security-Policy that allows nothing but this gateway's own files.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from gateway.busscan import BusScans, ScanBusy
from gateway.config import WebConfig
from gateway.web.auth import LoginLimiter, Sessions, verify_password
from gateway.web.checks import page_check
from gateway.web.state import LiveState

log = logging.getLogger("cgw.web")

COOKIE = "cgw_session"
MAX_BODY = 4096
STATIC = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
          "/app.css": ("app.css", "text/css")}  # fmt: skip
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
MAX_SCAN_UNITS = 247


def local_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_private or address.is_link_local


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: Any) -> None:
        # A browser that went away or stalled past the timeout: nothing to report loudly (the
        # base class prints a traceback to stderr, that is, to the journal).
        error = sys.exc_info()[1]
        log.debug("web: %s from %s: %s", type(error).__name__, client_address[0], error)


class WebServer:
    def __init__(self, settings: WebConfig, state: LiveState, scans: BusScans) -> None:
        self.settings = settings
        self.state = state
        self.scans = scans
        self.sessions = Sessions(settings.session_idle_min * 60)
        self.limiter = LoginLimiter()
        self.actions: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._scan_results: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._files = {
            path: (resources.files("gateway.web").joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in STATIC.items()
        }
        host, port = settings.listen
        self.httpd = _Server((host, port), self._handler_class())
        self.address = self.httpd.server_address
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("commissioning page on http://%s:%d/", *self.address[:2])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def run_actions(self) -> None:
        """In the daemon's main loop: what the page asked for that needs the daemon."""
        while True:
            try:
                self.actions.get_nowait()()
            except queue.Empty:
                return

    # -- scans --------------------------------------------------------------------------

    def start_scan(self, bus: str, first: int, last: int) -> str:
        scan_id = secrets.token_hex(6)
        with self._lock:
            self._scan_results[scan_id] = {"state": "running", "bus": bus}

        def finished(result: dict[str, Any]) -> None:
            with self._lock:
                self._scan_results[scan_id] = {"state": "done", **result}

        def begin() -> None:  # in the main loop
            try:
                self.scans.start(bus, list(range(first, last + 1)), finished)
            except (KeyError, ScanBusy) as exc:
                finished({"error": str(exc.args[0])})

        self.actions.put(begin)
        return scan_id

    def scan_result(self, scan_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._scan_results.get(scan_id)

    # -- HTTP ---------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(_Handler):
            web = server

        return Handler


class _Handler(BaseHTTPRequestHandler):
    web: WebServer
    timeout = 10  # a client that stops sending does not hold a thread
    server_version = "cgw"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)

    # -- plumbing -------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in {**HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: object, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", extra)

    def _token(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        return cookie[COOKIE].value if COOKIE in cookie else None

    def _allowed(self) -> bool:
        if local_address(self.client_address[0]):
            return True
        self._json(HTTPStatus.FORBIDDEN, {"error": "only from the local network"})
        return False

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too large"})
            return None
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "expected a JSON object"})
            return None
        return data

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._allowed():
            return
        web = self.web
        path = self.path.split("?", 1)[0]
        if path in web._files:
            body, kind = web._files[path]
            self._send(HTTPStatus.OK, body, kind)
            return
        session = web.sessions.get(self._token())
        if path == "/api/session":
            self._json(
                HTTPStatus.OK,
                {
                    "logged_in": session is not None,
                    "csrf": session.csrf if session else None,
                    "public_view": web.settings.public_view,
                },
            )
            return
        if session is None and not web.settings.public_view:
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "log in first"})
            return
        if path == "/api/state":
            self._json(HTTPStatus.OK, web.state.view())
        elif path.startswith("/api/scan/"):
            result = web.scan_result(path.removeprefix("/api/scan/"))
            if result is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "no such scan"})
            else:
                self._json(HTTPStatus.OK, result)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        if not self._allowed():
            return
        path = self.path.split("?", 1)[0]
        if path == "/api/login":
            self._login()
            return
        session = self.web.sessions.get(self._token())
        if session is None:
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "log in first"})
            return
        if not secrets.compare_digest(self.headers.get("X-CSRF-Token", ""), session.csrf):
            self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong CSRF token"})
            return
        body = self._body()
        if body is None:
            return
        if path == "/api/logout":
            self.web.sessions.end(self._token())
            self._json(
                HTTPStatus.OK,
                {},
                {"Set-Cookie": f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"},
            )
        elif path == "/api/check":
            self._json(HTTPStatus.OK, page_check(self.web.state.view()))
        elif path == "/api/scan":
            self._scan(body)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _login(self) -> None:
        web, address = self.web, self.client_address[0]
        wait = web.limiter.blocked_for(address)
        if wait > 0:
            self._json(
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": f"too many failed logins: try again in {wait:.0f} s"},
                {"Retry-After": str(int(wait) + 1)},
            )
            return
        body = self._body()
        if body is None:
            return
        password = body.get("password")
        if not isinstance(password, str) or not verify_password(
            password, web.settings.password_hash
        ):
            web.limiter.failed(address)
            log.warning("commissioning page: failed login from %s", address)
            time.sleep(0.2)  # a little friction on top of the limit
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "wrong password"})
            return
        web.limiter.succeeded(address)
        token, csrf = web.sessions.create()
        log.info("commissioning page: login from %s", address)
        cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        self._json(HTTPStatus.OK, {"csrf": csrf}, {"Set-Cookie": cookie})

    def _scan(self, body: dict[str, Any]) -> None:
        bus, first, last = body.get("bus"), body.get("first", 1), body.get("last", 16)
        units_valid = (
            all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last))
            and 0 <= first <= last <= MAX_SCAN_UNITS
        )
        if not isinstance(bus, str) or not units_valid:
            self._json(
                HTTPStatus.BAD_REQUEST, {"error": "bus, and units first..last within 0..247"}
            )
            return
        log.info(
            "commissioning page: scan of bus %s units %d-%d from %s",
            bus,
            first,
            last,
            self.client_address[0],
        )
        self._json(HTTPStatus.ACCEPTED, {"scan": self.web.start_scan(bus, first, last)})
