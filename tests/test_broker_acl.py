"""docs/mosquitto/cgw.acl on a real Mosquitto: each gateway publishes only under its own topics and
reads only its own commands; the platform reads all and commands; a real daemon works under it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from buffer.command import sign_command
from buffer.keys import public_key_text
from drivers.emulation.server import EmulatorServer
from gateway.localbroker import LocalBroker
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.keys import make_signer
from tests.support.platform import Subscriber, wait_until

ACL = Path(__file__).resolve().parent.parent / "docs" / "mosquitto" / "cgw.acl"
USERS = {"gw-test": "pw-test", "gw-other": "pw-other", "platform": "pw-platform"}


class Intruder:
    """Another gateway of the fleet, logged in as itself, trying the neighbour's topics."""

    def __init__(self, port: int) -> None:
        self.received: list[str] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-other")
        self.client.username_pw_set("gw-other", USERS["gw-other"])
        self.client.on_message = lambda c, u, m: self.received.append(m.topic)
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_subscribe(self, *args: object) -> None:
        self._subscribed.set()

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_each_gateway_keeps_to_its_own_topics(tmp_path: Path, emulator: EmulatorServer) -> None:
    passwords = tmp_path / "passwd"
    for user, password in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if user == "gw-test" else []),
                        str(passwords), user, password], check=True)  # fmt: skip
    extra = f"allow_anonymous false\npassword_file {passwords}\nacl_file {ACL}\n"
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    platform_key = make_signer(tmp_path / "platform")
    with LocalBroker(extra=extra, workdir=workdir) as broker:
        config = write_config(
            tmp_path,
            [Meter("incomer", 1)],
            tcp_port=emulator.serve_tcp(),
            mqtt_port=broker.port,
            mqtt_extra=f'username = "gw-test"\npassword = "{USERS["gw-test"]}"',
        )
        key = public_key_text(platform_key.public)
        config.write_text(config.read_text() + f'\n[commands]\nplatform_keys = ["{key}"]\n')
        with Subscriber(broker.port, username="platform", password=USERS["platform"]) as platform:
            daemon = DaemonProcess(config).start().wait_running()
            wait_until(
                lambda: platform.envelopes() and platform.on("meta"), 20, "the gateway's data"
            )

            # The platform commands the gateway, the gateway answers.
            ping = sign_command(platform_key, name="ping", gateway="gw-test", site="lab",
                                issued_ms=int(time.time() * 1000))  # fmt: skip
            platform.client.publish("cgw/v1/lab/gw-test/cmd/ping", ping, qos=1)
            wait_until(lambda: platform.on("reply"), 10, "the gateway's reply")
            assert json.loads(platform.on("reply")[0].payload)["status"] == "ok"

            intruder = Intruder(broker.port)
            try:
                # Mosquitto grants any subscription and applies the ACL to each message.
                intruder.subscribe("cgw/v1/lab/gw-test/cmd/+")
                intruder.subscribe("cgw/v1/lab/gw-other/cmd/+")
                # Writing under the neighbour's id reaches no one; under its own it does.
                intruder.publish("cgw/v1/lab/gw-test/readings", b'{"forged":true}')
                intruder.publish("cgw/v1/lab/gw-test/cmd/ping", ping)
                intruder.publish("cgw/v1/lab/gw-other/readings", b'{"own":true}')
                wait_until(lambda: platform.on("gw-other/readings"), 10, "the intruder's own data")
                platform.client.publish("cgw/v1/lab/gw-test/cmd/ping", b"{}", qos=1)
                platform.client.publish("cgw/v1/lab/gw-other/cmd/ping", b"{}", qos=1)
                wait_until(lambda: intruder.received, 10, "the intruder's own command")
                time.sleep(0.5)
            finally:
                intruder.close()
            assert not any(m.payload == b'{"forged":true}' for m in platform.messages)
            # Its own command reached it; the one for gw-test, published just before, did not.
            assert intruder.received == ["cgw/v1/lab/gw-other/cmd/ping"]
            replies = [json.loads(m.payload) for m in platform.on("reply")]
            # One reply to the platform's ping, one refusing the platform's empty command; the
            # intruder's copy of the ping never reached the gateway (or it would say "replayed").
            assert sorted(r["reason"] or "ok" for r in replies) == ["ok", "unsigned"]
            assert daemon.stop() == 0
    assert "Traceback" not in daemon.logs()
