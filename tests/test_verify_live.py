"""`cgw verify --broker`: the platform's verifier on a live shared subscription, against a real
daemon on a real Mosquitto, while a forger publishes a tampered envelope, a replay onto another
gateway's topic and an envelope signed by an unregistered key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from buffer.canonical import canonical
from buffer.envelope import GENESIS_PREV, seal
from buffer.keys import public_key_text
from drivers.emulation.server import EmulatorServer
from drivers.snapshot import Snapshot
from gateway.localbroker import LocalBroker
from tests.support.gateway import DaemonProcess, Meter, write_config
from tests.support.keys import make_signer
from tests.support.platform import Subscriber, wait_until
from tests.test_gateway_e2e import public_key

METERS = [Meter("incomer", 1), Meter("compressor", 2, "chint_dtsu666")]


def verify_live(port: int, registry: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "verify",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--topic",
            "$share/verifiers/cgw/v1/+/+/+",
            "--keys",
            str(registry),
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_live_subscription_verifies_and_catches_every_forgery(
    tmp_path: Path, broker: LocalBroker, emulator: EmulatorServer
) -> None:
    config = write_config(
        tmp_path, METERS, tcp_port=emulator.serve_tcp(), mqtt_port=broker.port, interval_s=0.5
    )
    with Subscriber(broker.port) as platform:
        daemon = DaemonProcess(config).start().wait_running()
        wait_until(lambda: platform.envelopes(), 20, "an envelope")
        registry = tmp_path / "keys.toml"
        registry.write_text(
            f'[gateways.gw-test]\npublic_key = "{public_key_text(public_key(tmp_path))}"\n'
        )

        clean = verify_live(broker.port, registry, "--count", "6", "--duration", "30")
        out, err = clean.communicate(timeout=40)
        assert clean.returncode == 0, out + err
        report = json.loads(out)
        gateway = report["gateways"]["gw-test"]
        assert gateway["envelopes"] == 6 and gateway["missing"] == []
        incomer = gateway["devices"]["incomer"]
        assert incomer["interval_s"] == 0.5  # learnt from the retained meta
        assert incomer["readings"] > 0 and incomer["meets_required"] is True

        watching = verify_live(broker.port, registry, "--duration", "6")
        time.sleep(1.5)  # subscribed by now
        real = platform.envelopes()[-1]
        envelope = json.loads(real)
        record = envelope["records"][0]
        record["values"] = {k: v + 1 for k, v in record["values"].items()}
        altered = canonical({**envelope, "records": [record]})  # a changed value, old signature
        stranger = make_signer(tmp_path / "stranger")
        foreign = seal(
            stranger,
            gateway="gw-test",
            site="lab",
            stream="readings",
            seq=10**6,
            prev=GENESIS_PREV,
            created_ms=envelope["created"],
            records=[canonical(Snapshot("incomer", envelope["created"], "ok", {}).record())],
        ).body
        forger = platform.client
        forger.publish("cgw/v1/lab/gw-test/readings", altered, qos=1)
        forger.publish("cgw/v1/lab/gw-other/readings", real, qos=1)  # a replay elsewhere
        forger.publish("cgw/v1/lab/gw-test/readings", foreign, qos=1)
        out, err = watching.communicate(timeout=30)
        assert daemon.stop() == 0
    assert watching.returncode == 1, out + err
    report = json.loads(out)
    kinds = sorted(p["kind"] for p in report["problems"])
    assert kinds == ["bad_signature", "unknown_key", "wrong_topic"], report["problems"]
    assert report["gateways"]["gw-test"]["envelopes"] > 0
