"""Downlink commands: the signed format (buffer/command.py), and a real daemon answering a platform
over a real Mosquitto: ping, every kind of rejection, resend, scan, and a configuration applied,
confirmed, refused and rolled back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer.command import (
    Command,
    Rejection,
    check_command,
    check_reply,
    sign_command,
)
from buffer.keys import Signer, key_id, public_key_text
from drivers.emulation.server import EmulatorServer
from gateway.localbroker import LocalBroker, free_port
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.keys import make_signer
from tests.support.platform import Subscriber, wait_until
from tests.support.schemas import problems
from tests.test_gateway_e2e import public_key

NOW = 1_796_000_000_000
GATEWAY, SITE = "gw-test", "lab"
METERS = [Meter("incomer", 1), Meter("compressor", 2, "chint_dtsu666")]


@pytest.fixture
def platform_key(tmp_path: Path) -> Signer:
    return make_signer(tmp_path / "platform")


def command(signer: Signer, name: str = "ping", **kwargs: Any) -> bytes:
    kwargs.setdefault("issued_ms", NOW)
    return sign_command(signer, name=name, gateway=GATEWAY, site=SITE, **kwargs)


def check(payload: bytes, signer: Signer, name: str = "ping", now: int = NOW) -> object:
    keys = {signer.kid: signer.public}
    return check_command(payload, keys, gateway=GATEWAY, site=SITE, name=name, now_ms=now)


def reason(result: object) -> str:
    assert isinstance(result, Rejection), result
    return result.reason


def test_a_signed_command_checks_and_matches_its_schema(platform_key: Signer) -> None:
    payload = command(platform_key, "resend", args={"from_seq": 3, "to_seq": 9})
    result = check(payload, platform_key, "resend")
    assert isinstance(result, Command) and result.args == {"from_seq": 3, "to_seq": 9}
    assert problems("command", payload) == []


def test_each_rejection_has_its_reason(platform_key: Signer, tmp_path: Path) -> None:
    other = make_signer(tmp_path / "other")
    good = json.loads(command(platform_key))
    unsigned = json.dumps({k: v for k, v in good.items() if k != "sig"}).encode()
    assert reason(check(unsigned, platform_key)) == "unsigned"
    assert reason(check(b"{not json", platform_key)) == "malformed"
    assert reason(check(command(other), platform_key)) == "unknown_key"
    forged = json.dumps({**good, "kid": platform_key.kid, "sig": json.loads(command(other))["sig"]})
    assert reason(check(forged.encode(), platform_key)) == "bad_signature"
    assert reason(check(command(platform_key), platform_key, now=NOW + 10 * 60_000)) == "expired"
    assert reason(check(command(platform_key), platform_key, "config")) == "wrong_target"
    elsewhere = sign_command(
        platform_key, name="ping", gateway="gw-other", site=SITE, issued_ms=NOW
    )
    assert reason(check(elsewhere, platform_key)) == "wrong_target"
    future = command(platform_key, issued_ms=NOW + 3_600_000)
    assert reason(check(future, platform_key)) == "not_yet_valid"
    eternal = command(platform_key, lifetime_ms=30 * 24 * 3_600_000)
    assert reason(check(eternal, platform_key)) == "malformed"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_rejected(data: st.DataObject) -> None:
    signer = _SIGNER
    payload = bytearray(command(signer, "resend", args={"from_seq": 1, "to_seq": 2}))
    index = data.draw(st.integers(0, len(payload) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != payload[index]))
    payload[index] = value
    assert isinstance(check(bytes(payload), signer, "resend"), Rejection)


_SIGNER = Signer.__new__(Signer)  # replaced below by a real key, made once for the property test


@pytest.fixture(autouse=True, scope="module")
def _property_signer(tmp_path_factory: pytest.TempPathFactory) -> None:
    global _SIGNER
    _SIGNER = make_signer(tmp_path_factory.mktemp("property"))


# -- a real daemon ------------------------------------------------------------------------


class Platform:
    """The platform's side: signs commands, publishes them and waits for the signed replies."""

    def __init__(self, subscriber: Subscriber, signer: Signer, gateway_key: object) -> None:
        self.subscriber = subscriber
        self.signer = signer
        self.gateway_keys = {key_id(gateway_key): gateway_key}  # type: ignore[arg-type]

    def send(self, name: str, payload: bytes) -> None:
        self.subscriber.client.publish(f"cgw/v1/{SITE}/{GATEWAY}/cmd/{name}", payload, qos=1)

    def command(self, name: str, timeout_s: float = 20, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("issued_ms", int(time.time() * 1000))
        payload = sign_command(self.signer, name=name, gateway=GATEWAY, site=SITE, **kwargs)
        self.send(name, payload)
        return self.reply(json.loads(payload)["id"], timeout_s)

    def replies(self, command_id: str | None) -> list[dict[str, Any]]:
        found = []
        for message in self.subscriber.on("reply"):
            reply = check_reply(message.payload, self.gateway_keys)  # type: ignore[arg-type]
            assert reply is not None, f"a reply not signed by the gateway: {message.payload!r}"
            assert problems("reply", message.payload) == []
            if reply["id"] == command_id:
                found.append(reply)
        return found

    def reply(self, command_id: str | None, timeout_s: float = 20, nth: int = 1) -> dict[str, Any]:
        wait_until(
            lambda: len(self.replies(command_id)) >= nth, timeout_s, f"reply to {command_id}"
        )
        return self.replies(command_id)[nth - 1]


def gateway_config(tmp_path: Path, port: int, broker: int, platform_key: Signer) -> Path:
    config = write_config(tmp_path, METERS, tcp_port=port, mqtt_port=broker, interval_s=0.5)
    key = public_key_text(platform_key.public)
    config.write_text(
        config.read_text() + f'\n[commands]\nplatform_keys = ["{key}"]\nprobation_s = 10\n'
    )
    return config


def test_ping_rejections_resend_and_scan(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer, platform_key: Signer
) -> None:
    config = gateway_config(tmp_path, emulator.serve_tcp(), broker.port, platform_key)
    with Subscriber(broker.port) as subscriber:
        daemon = DaemonProcess(config).start().wait_running()
        platform = Platform(subscriber, platform_key, public_key(tmp_path))
        wait_until(lambda: len(subscriber.seqs()) >= 3, 20, "three envelopes")

        pong = platform.command("ping")
        assert pong["status"] == "ok" and pong["result"]["software"].startswith("cgw ")

        stranger = make_signer(tmp_path / "stranger")
        foreign = sign_command(
            stranger, name="ping", gateway=GATEWAY, site=SITE, issued_ms=int(time.time() * 1000)
        )
        platform.send("ping", foreign)
        assert platform.reply(json.loads(foreign)["id"])["reason"] == "unknown_key"
        expired = sign_command(
            platform_key, name="ping", gateway=GATEWAY, site=SITE, issued_ms=NOW - 3_600_000
        )
        platform.send("ping", expired)
        assert platform.reply(json.loads(expired)["id"])["reason"] == "expired"
        platform.send("ping", b'{"id":"x1","name":"ping"}')
        assert platform.reply("x1")["reason"] == "unsigned"
        # The same signed command again: the first is carried out, the copy refused.
        once = sign_command(
            platform_key, name="ping", gateway=GATEWAY, site=SITE, issued_ms=int(time.time() * 1000)
        )
        platform.send("ping", once)
        platform.send("ping", once)
        first, second = (
            platform.reply(json.loads(once)["id"]),
            platform.reply(json.loads(once)["id"], nth=2),
        )
        assert (first["status"], second["reason"]) == ("ok", "replayed")

        before = len(subscriber.envelopes())
        resent = platform.command("resend", args={"from_seq": 1, "to_seq": 3})
        assert resent["result"]["resent"] == 3 and resent["result"]["missing"] == []
        wait_until(
            lambda: sum(json.loads(b)["seq"] <= 3 for b in subscriber.envelopes()[before:]) >= 3,
            15,
            "seq 1-3 again",
        )
        again = [b for b in subscriber.envelopes()[before:] if json.loads(b)["seq"] <= 3]
        assert set(again) <= set(subscriber.envelopes()[:before])  # identical bytes
        beyond = platform.command("resend", args={"from_seq": 10**6, "to_seq": 10**6 + 5})
        assert beyond["result"]["missing"] == [[10**6, 10**6 + 5]]
        assert platform.command("resend", args={"from_seq": 5})["reason"] == "bad_args"

        scan = platform.command("scan", args={"bus": "bus", "units": [1, 4]}, timeout_s=30)
        found = {f["unit"]: f for f in scan["result"]["found"]}
        assert set(found) == {1, 2}
        assert found[1]["configured_as"] == "incomer" and found[1]["profile"] == "eastron_sdm630"
        assert platform.command("scan", args={"bus": "nope"})["reason"] == "bad_args"
        assert daemon.stop() == 0
    logs = daemon.logs()
    assert "rejected: unknown_key" in logs and "rejected: replayed" in logs
    counts = json.loads((tmp_path / "run" / "status.json").read_text())["commands"]
    # rejected: unknown key, expired, unsigned, replayed; failed (bad_args) are neither
    assert (counts["rejected"], counts["carried_out"], counts["dropped"]) == (4, 5, 0)
    assert "Traceback" not in logs


def test_a_config_is_applied_on_probation_and_a_bad_one_rolled_back(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer, platform_key: Signer
) -> None:
    config = gateway_config(tmp_path, emulator.serve_tcp(), broker.port, platform_key)
    original = config.read_text()
    with Subscriber(broker.port) as subscriber:
        daemon = DaemonProcess(config).start().wait_running()
        platform = Platform(subscriber, platform_key, public_key(tmp_path))
        wait_until(lambda: subscriber.on("meta"), 20, "meta")

        invalid = original.replace("unit = 2", "unit = 300")
        refused = platform.command("config", args={"config": invalid})
        assert (refused["status"], refused["reason"]) == ("failed", "invalid_config")
        assert "devices[1].unit: must be between 0 and 255, not 300" in refused["detail"]

        slower = original.replace("interval_s = 0.5", "interval_s = 0.7")
        accepted = platform.command("config", args={"config": slower})
        assert accepted["status"] == "accepted"
        confirmed = platform.reply(accepted["id"], timeout_s=30, nth=2)
        assert confirmed["status"] == "ok" and confirmed["result"]["applied"] is True
        meta = subscriber.last_json("meta")
        assert {d["interval_s"] for d in meta["devices"]} == {0.7}

        dead = slower.replace(f"port = {broker.port}", f"port = {free_port()}")
        accepted = platform.command("config", args={"config": dead})
        assert accepted["status"] == "accepted"
        rolled_back = platform.reply(accepted["id"], timeout_s=45, nth=2)
        assert (rolled_back["status"], rolled_back["reason"]) == ("failed", "rolled_back")
        assert "no broker connection" in rolled_back["detail"]
        assert daemon.process is not None and daemon.process.poll() is None  # the same process

        # A configuration that loads but cannot start (a signing key others can read).
        unsafe = tmp_path / "unsafe.key"
        unsafe.write_bytes((tmp_path / "data" / "signing.key").read_bytes())
        unsafe.chmod(0o644)
        broken = slower.replace(
            'runtime_dir = "run"', f'runtime_dir = "run"\nsigning_key = "{unsafe}"'
        )
        accepted = platform.command("config", args={"config": broken})
        assert accepted["status"] == "accepted"
        rolled_back = platform.reply(accepted["id"], timeout_s=30, nth=2)
        assert rolled_back["reason"] == "rolled_back" and "does not start" in rolled_back["detail"]
        assert "readable by others" in rolled_back["detail"]
        assert platform.command("ping")["status"] == "ok"
        assert daemon.stop() == 0
    assert config.read_text() == original  # the provisioned file is never touched
    applied = (tmp_path / "data" / "config" / "gateway.toml").read_text()
    assert applied == slower  # the last good one stays
    assert "Traceback" not in daemon.logs()
