"""TLS (server verification, mutual TLS) and credentials against a real Mosquitto; failures are
one clear log line, retried with backoff, and buffering goes on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from drivers.emulation.server import EmulatorServer
from gateway.localbroker import LocalBroker, free_port
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.pki import Authority
from tests.support.platform import Subscriber, wait_until

METERS = [Meter("incomer", 1)]


def tls_broker(tmp_path: Path, ca: Authority, plain_port: int) -> LocalBroker:
    server = ca.issue("broker", server=True)
    extra = (
        f"cafile {ca.ca_file}\ncertfile {server.cert}\nkeyfile {server.key}\nrequire_certificate true\n"
        f"listener {plain_port} 127.0.0.1\n"  # the platform's side of the test, without TLS
    )
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    return LocalBroker(extra=extra, workdir=workdir)


def tls_settings(ca_file: Path, client_cert: Path, client_key: Path) -> str:
    return f'[mqtt.tls]\nca_file = "{ca_file}"\ncert_file = "{client_cert}"\nkey_file = "{client_key}"\n'


def status_file(config: Path) -> dict:
    return json.loads((config.parent / "run" / "status.json").read_text())


def test_mutual_tls_delivers(tmp_path: Path, emulator: EmulatorServer) -> None:
    ca = Authority(tmp_path / "pki")
    client = ca.issue("gw-test", server=False)
    plain = free_port()
    with tls_broker(tmp_path, ca, plain) as broker, Subscriber(plain) as platform:
        config = write_config(
            tmp_path / "gw",
            METERS,
            tcp_port=emulator.serve_tcp(),
            mqtt_port=broker.port,
            mqtt_extra=tls_settings(ca.ca_file, client.cert, client.key),
        )
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(lambda: len(platform.seqs()) >= 2, 30, "envelopes over mutual TLS")
        assert daemon.stop() == 0


@pytest.mark.parametrize("mistake", ["unknown CA", "no client certificate"])
def test_tls_failure_is_logged_clearly_and_buffering_continues(
    tmp_path: Path, emulator: EmulatorServer, mistake: str
) -> None:
    ca = Authority(tmp_path / "pki")
    client = ca.issue("gw-test", server=False)
    stranger = Authority(tmp_path / "other", name="other-ca")
    with tls_broker(tmp_path, ca, free_port()) as broker:
        tls = (
            tls_settings(stranger.ca_file, client.cert, client.key)
            if mistake == "unknown CA"
            else f'[mqtt.tls]\nca_file = "{ca.ca_file}"\n'
        )
        config = write_config(
            tmp_path / "gw",
            METERS,
            tcp_port=emulator.serve_tcp(),
            mqtt_port=broker.port,
            mqtt_extra=tls,
        )
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(lambda: daemon.buffer().last_seq >= 5, 30, "envelopes sealed while offline")
        uplink = status_file(config)["uplink"]
        assert not uplink["connected"]
        assert daemon.stop() == 0
    logs = daemon.logs()
    if mistake == "unknown CA":
        assert "TLS certificate verification failed" in logs
    else:
        assert "closed the connection before accepting it" in logs
    assert "Traceback" not in logs
    assert (
        daemon.buffer().stats().backlog_envelopes == daemon.buffer().last_seq
    )  # all kept for later


def password_broker(tmp_path: Path) -> LocalBroker:
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    passwords = workdir / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gw-test", "right"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "platform", "secret"], check=True)
    return LocalBroker(extra=f"allow_anonymous false\npassword_file {passwords}\n", workdir=workdir)


def test_right_credentials_from_a_password_file_deliver(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("right\n")
    with password_broker(tmp_path) as broker:
        config = write_config(
            tmp_path / "gw",
            METERS,
            tcp_port=emulator.serve_tcp(),
            mqtt_port=broker.port,
            mqtt_extra=f'username = "gw-test"\npassword_file = "{secret}"\n',
        )
        platform = Subscriber(broker.port)
        platform.client.username_pw_set("platform", "secret")
        with platform:
            daemon = DaemonProcess(config).start().wait_running()
            wait_until(lambda: len(platform.seqs()) >= 2, 30, "envelopes with credentials")
            assert daemon.stop() == 0


def test_refused_credentials_are_logged_and_retried_with_backoff(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    with password_broker(tmp_path) as broker:
        config = write_config(
            tmp_path / "gw",
            METERS,
            tcp_port=emulator.serve_tcp(),
            mqtt_port=broker.port,
            mqtt_extra='username = "gw-test"\npassword = "wrong"\n',
        )
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(lambda: daemon.buffer().last_seq >= 5, 30, "envelopes sealed while refused")
        assert daemon.stop() == 0
    logs = daemon.logs()
    refusals = [line for line in logs.splitlines() if "refused the connection" in line]
    assert refusals and "Not authorized" in refusals[0]
    assert len(refusals) == 1, "the same refusal is logged once, not on every retry"
    assert "Traceback" not in logs
