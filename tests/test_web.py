"""The commissioning page: a real daemon on emulated meters (one with a reversed CT, one unit
silent) serving the page; its API over real HTTP, then the page in a real headless Chromium
(Debian's, driven by Playwright), with screenshots of the phone and desktop layouts kept in
test-artifacts/web/."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from drivers.emulation.load import LoadModel
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile
from gateway.localbroker import free_port
from gateway.web.auth import LOGIN_ATTEMPTS, LoginLimiter, Sessions, hash_password, verify_password
from gateway.web.server import local_address
from tests.support.gateway import DaemonProcess
from tests.support.platform import wait_until

PASSWORD = "board-7-pass"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
CHROMIUM = Path("/usr/bin/chromium")


def test_passwords_sessions_and_the_login_limit() -> None:
    line = hash_password(PASSWORD)
    assert line.startswith("scrypt$") and PASSWORD not in line
    assert verify_password(PASSWORD, line) and not verify_password("board-7-pas", line)
    sessions = Sessions(idle_s=60)
    token, csrf = sessions.create(now=0)
    assert sessions.get(token, now=1).csrf == csrf  # type: ignore[union-attr]
    assert sessions.get(token, now=50) is not None  # use keeps it alive ...
    assert sessions.get(token, now=100) is not None
    assert sessions.get(token, now=161) is None  # ... idle for a minute, it is gone
    limiter = LoginLimiter()
    for _ in range(LOGIN_ATTEMPTS):
        assert limiter.blocked_for("10.0.0.9", now=0) == 0
        limiter.failed("10.0.0.9", now=0)
    assert (
        limiter.blocked_for("10.0.0.9", now=1) > 0 and limiter.blocked_for("10.0.0.8", now=1) == 0
    )
    assert limiter.blocked_for("10.0.0.9", now=61) == 0


@pytest.mark.parametrize(
    ("address", "local"),
    [("127.0.0.1", True), ("192.168.1.20", True), ("10.1.2.3", True), ("169.254.0.5", True),
     ("::1", True), ("::ffff:192.168.0.7", True), ("fd00::1", True),
     ("8.8.8.8", False), ("2001:4860::8888", False), ("::ffff:1.1.1.1", False)],
)  # fmt: skip
def test_only_local_clients_are_served(address: str, local: bool) -> None:
    assert local_address(address) is local


@pytest.fixture
def floor() -> Iterator[EmulatorServer]:
    """Unit 1 healthy, unit 3 with the L2 CT reversed; nothing answers at unit 5."""
    sdm630 = load_shipped_profile("eastron_sdm630")
    meters = [
        EmulatedMeter(1, sdm630, seed=1),
        EmulatedMeter(3, sdm630, load=LoadModel(seed=3, reversed_ct=2)),
    ]
    server = EmulatorServer(meters)
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path: Path, floor: EmulatorServer) -> Iterator[tuple[DaemonProcess, str]]:
    password_file = tmp_path / "web.password"
    password_file.write_text(hash_password(PASSWORD) + "\n")
    password_file.chmod(0o600)
    port = free_port()
    devices = "".join(
        f'[[devices]]\nid = "{name}"\nbus = "lan"\nunit = {unit}\nprofile = "eastron_sdm630"\ninterval_s = 0.5\n'
        for name, unit in (("incomer", 1), ("compressor", 3), ("spare", 5))
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\nid = "gw-web"\nsite = "plant-a"\ndata_dir = "data"\nruntime_dir = "run"\n'
        'clock = "trusted"\n[mqtt]\nenabled = false\n'
        f'[web]\nlisten = "127.0.0.1:{port}"\npassword_file = "{password_file}"\n'
        f'[[buses]]\nid = "lan"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {floor.serve_tcp()}\ntimeout_s = 0.3\n'
        + devices
    )
    daemon = DaemonProcess(config).start().wait_running()
    yield daemon, f"http://127.0.0.1:{port}"
    daemon.stop()
    assert "Traceback" not in daemon.logs()


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.csrf = ""

    def call(
        self, path: str, body: dict[str, Any] | None = None, csrf: bool = True
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data)
        if body is not None:
            request.add_header("Content-Type", "application/json")
            if csrf:
                request.add_header("X-CSRF-Token", self.csrf)
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def test_the_api_needs_the_password_a_csrf_token_and_limits_guessing(
    gateway: tuple[DaemonProcess, str],
) -> None:
    _, base = gateway
    with urllib.request.urlopen(base + "/", timeout=10) as page:
        assert page.status == 200 and b"/app.js" in page.read()
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    client = Client(base)
    assert client.call("/api/state")[0] == 401
    assert client.call("/api/login", {"password": "nope"})[0] == 401
    status, answer = client.call("/api/login", {"password": PASSWORD})
    assert status == 200
    client.csrf = answer["csrf"]
    wait_until(lambda: len(client.call("/api/state")[1]["devices"]) == 3, 15, "three devices")
    wait_until(
        lambda: any(d["warnings"] for d in client.call("/api/state")[1]["devices"]), 15, "warnings"
    )
    assert client.call("/api/check", {}, csrf=False)[0] == 403
    status, check = client.call("/api/check", {})
    found = {(f["subject"], f["check"]): f["status"] for f in check["findings"]}
    assert found[("incomer", "answers")] == "OK" and found[("spare", "answers")] == "FAIL"
    assert found[("compressor", "power L2")] == "WARN"
    assert check["verdict"].startswith("FAIL")
    status, started = client.call("/api/scan", {"bus": "lan", "first": 1, "last": 6})
    assert status == 202

    def scanned() -> Any:
        result = client.call(f"/api/scan/{started['scan']}")[1]
        return result if result["state"] == "done" else None

    wait_until(scanned, 30, "the scan")
    result = scanned()
    assert {f["unit"]: f["configured_as"] for f in result["found"]} == {
        1: "incomer",
        3: "compressor",
    }
    assert 'profile = "eastron_sdm630"' in result["snippet"]
    # Guessing is cut off after a few tries (the right password too, until the minute is over).
    stranger = Client(base)
    codes = [
        stranger.call("/api/login", {"password": f"guess-{i}"})[0]
        for i in range(LOGIN_ATTEMPTS + 1)
    ]
    assert codes == [401] * LOGIN_ATTEMPTS + [429]
    assert stranger.call("/api/login", {"password": PASSWORD})[0] == 429


def test_browsers_that_hang_never_hold_up_polling(gateway: tuple[DaemonProcess, str]) -> None:
    """Twenty connections that send half a request and stall: polling keeps its cadence."""
    import socket
    from urllib.parse import urlsplit

    daemon, base = gateway
    url = urlsplit(base)
    status_file = daemon.config.parent / "run" / "status.json"

    def polls() -> int:
        return int(json.loads(status_file.read_text())["devices"]["incomer"]["polls"])

    wait_until(lambda: status_file.exists() and polls() > 0, 15, "polling")
    stalled = [socket.create_connection((url.hostname, url.port)) for _ in range(20)]
    try:
        for connection in stalled:
            connection.sendall(b"GET /api/state HTTP/1.1\r\nHost: x\r\n")  # and never the end
        before, started = polls(), time.monotonic()
        time.sleep(4.0)
        done, elapsed = polls() - before, time.monotonic() - started
    finally:
        for connection in stalled:
            connection.close()
    # interval_s = 0.5: about 8 polls in 4 s; the status file lags up to 2 s behind
    assert done >= (elapsed - 2.5) / 0.5, f"{done} polls in {elapsed:.1f} s"
    with urllib.request.urlopen(base + "/api/session", timeout=10) as answer:
        assert answer.status == 200  # and the page still answers others


def test_the_page_in_a_real_browser(gateway: tuple[DaemonProcess, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is not installed: ./dev test installs it"
    _, base = gateway
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            desktop = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-GB")
            desktop.goto(base)
            desktop.fill("#password", "not-it")
            desktop.click("#login button")
            expect(desktop.locator("#login-error")).to_have_text("Wrong password")
            desktop.fill("#password", PASSWORD)
            desktop.click("#login button")
            expect(desktop.locator("section.device")).to_have_count(3, timeout=15_000)
            expect(desktop.locator('[data-bus="lan"] .badge')).to_have_text("keeps up")
            incomer = desktop.locator('[data-device="incomer"]')
            expect(incomer.locator(".badge")).to_have_text("answering")
            expect(desktop.locator('[data-device="spare"]')).to_have_attribute(
                "data-answering", "false"
            )
            expect(desktop.locator('[data-device="spare"] .badge')).to_have_text("not answering")
            expect(desktop.locator('[data-device="compressor"] .warning')).to_contain_text(
                "reversed CT on L2", timeout=15_000
            )
            power = incomer.locator('[data-quantity="active_power_w"] .value')
            first = power.inner_text()
            expect(power).not_to_have_text(first, timeout=15_000)  # live, without a reload
            desktop.click("#run-check")
            expect(desktop.locator(".verdict")).to_contain_text("FAIL")
            desktop.fill("#scan-first", "1")
            desktop.fill("#scan-last", "4")
            desktop.click("#scan button")
            expect(desktop.locator("li.found")).to_have_count(2, timeout=30_000)
            expect(desktop.locator(".snippet")).to_contain_text("eastron_sdm630")
            desktop.screenshot(path=str(ARTIFACTS / "desktop.png"), full_page=True)

            phone = browser.new_page(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, locale="zh-CN"
            )
            phone.goto(base)
            phone.fill("#password", PASSWORD)
            phone.click("#login button")
            expect(phone.locator("section.device")).to_have_count(3, timeout=15_000)
            expect(phone.locator('[data-device="spare"] .badge')).to_have_text("无应答")
            expect(phone.locator("#run-check")).to_have_text("运行检查")
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the phone layout scrolls sideways ({width} px)"
            phone.screenshot(path=str(ARTIFACTS / "phone-zh.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "desktop.png").stat().st_size > 10_000


def test_public_view_shows_the_gateway_but_actions_still_need_the_password(tmp_path: Path) -> None:
    from gateway.busscan import BusScans
    from gateway.config import loads
    from gateway.web.server import WebServer
    from gateway.web.state import LiveState

    password_file = tmp_path / "web.password"
    password_file.write_text(hash_password(PASSWORD) + "\n")
    password_file.chmod(0o600)
    config = loads(
        '[gateway]\nid = "gw"\nsite = "s"\n[mqtt]\nenabled = false\n'
        f'[web]\nlisten = "127.0.0.1:{free_port()}"\npassword_file = "{password_file}"\npublic_view = true\n',
        tmp_path / "gateway.toml",
    )
    state = LiveState(config)
    state.publish({"software": "cgw test", "devices": {}})
    server = WebServer(config.web, state, BusScans([]))
    server.start()
    try:
        client = Client(f"http://127.0.0.1:{server.address[1]}")
        status, view = client.call("/api/state")
        assert status == 200 and view["gateway"]["software"] == "cgw test"
        assert client.call("/api/check", {})[0] == 401
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ('listen = "8080"', r"web\.listen: '8080' must be ADDRESS:PORT"),
        ('password_file = "missing"', r"web\.password_file: cannot read"),
        ('password_file = "plain.txt"', r"web\.password_file: not a password hash"),
        ('password_file = "open.hash"', r"web\.password_file: .* readable by others"),
    ],
)
def test_web_config_mistakes_name_their_key(tmp_path: Path, web: str, message: str) -> None:
    from gateway.config import ConfigError, loads

    (tmp_path / "plain.txt").write_text("hunter22\n")
    (tmp_path / "plain.txt").chmod(0o600)
    (tmp_path / "open.hash").write_text(hash_password(PASSWORD))
    (tmp_path / "open.hash").chmod(0o644)
    if "password_file" not in web:
        web += '\npassword_file = "plain.txt"'
    text = f'[gateway]\nid = "gw"\nsite = "s"\n[mqtt]\nenabled = false\n[web]\n{web}\n'
    with pytest.raises(ConfigError, match=message):
        loads(text, tmp_path / "gateway.toml")


def test_the_site_power_history_and_todays_energy(tmp_path: Path) -> None:
    from drivers.snapshot import Snapshot
    from gateway.config import loads
    from gateway.web.state import HISTORY_EVERY_S, LiveState

    devices = "".join(
        f'[[devices]]\nid = "{d}"\nbus = "b"\nunit = {u}\nprofile = "eastron_sdm630"\n'
        for d, u in (("grid", 1), ("press", 2))
    )
    config = loads(
        '[gateway]\nid = "gw"\nsite = "s"\ntimezone = "Asia/Shanghai"\n[mqtt]\nenabled = false\n'
        '[[buses]]\nid = "b"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 502\n'
        + devices
        + '[accounting]\n[[accounting.meters]]\ndevice = "grid"\nrole = "grid_import"\n'
        '[[accounting.meters]]\ndevice = "press"\nrole = "load"\n',
        tmp_path / "gateway.toml",
    )
    state = LiveState(config)
    start = 1_796_000_000_000
    for step in range(3):
        for device, watts, kwh in (("grid", 1000.0 + step, 10.0 + step), ("press", 500.0, 5.0)):
            values = {"active_power_w": watts, "active_energy_import_kwh": kwh}
            state.observe(Snapshot(device, start + step * 10_000, "ok", values))
        state.publish({"devices": {}}, now=step * HISTORY_EVERY_S)
    view = state.view()
    # The site's power is its grid meter's (the load is a sub-meter), one point per 10 s.
    assert [w for _, w in view["history"]] == [1000.0, 1001.0, 1002.0]
    today = {d["id"]: d["today_kwh"] for d in view["devices"]}
    assert today == {"grid": 2.0, "press": 0.0} and view["site"]["today_kwh"] == 2.0
    accounted = {"accounting": {"today": {"kwh": {"grid": 7.5}, "to_ms": start}}, "devices": {}}
    state.publish(accounted, now=25.0)
    grid = next(d for d in state.view()["devices"] if d["id"] == "grid")
    assert (grid["today_kwh"], grid["today_to_ms"]) == (7.5, start)


def test_a_port_in_use_is_a_clear_configuration_error(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    password_file = tmp_path / "web.password"
    password_file.write_text(hash_password(PASSWORD))
    password_file.chmod(0o600)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.toml"
        config.write_text(
            '[gateway]\nid = "gw"\nsite = "s"\ndata_dir = "data"\nruntime_dir = "run"\n'
            f'[mqtt]\nenabled = false\n[web]\nlisten = "127.0.0.1:{port}"\npassword_file = "{password_file}"\n'
        )
        run = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 78, run.stderr
    assert f"web.listen: cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr
