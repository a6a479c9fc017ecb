"""`cgw demo`: the example config running against emulated meters, with a local broker if possible.

The demo plays the platform too: it subscribes to the gateway's readings, verifies every envelope
and prints what arrives, so one command shows the whole path working.
"""

from __future__ import annotations

import json
import logging
import threading
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from buffer.keys import key_id
from buffer.verify import verify
from drivers.emulation.meter import EmulatedMeter
from drivers.emulation.server import EmulatorServer
from drivers.profile import load_shipped_profile, profile_from_mapping
from gateway.config import Config, parse
from gateway.daemon import Daemon
from gateway.localbroker import LocalBroker

log = logging.getLogger("cgw.demo")
REPORT_EVERY_S = 5.0


def example_config() -> tuple[dict[str, Any], str]:
    path = resources.files("gateway").joinpath("examples", "gateway.toml")
    return tomllib.loads(path.read_text(encoding="utf-8")), str(path)


def start_emulators(data: dict[str, Any], origin: str, data_dir: Path) -> list[EmulatorServer]:
    """Emulate every device of the config with its own profile; point the buses at them."""
    inline = data.get("profiles", {})
    servers: list[EmulatorServer] = []
    for bus in data["buses"]:
        meters: list[EmulatedMeter] = []
        for device in (d for d in data["devices"] if d["bus"] == bus["id"]):
            name = device["profile"]
            profile = (
                profile_from_mapping(name, inline[name], origin)
                if name in inline
                else load_shipped_profile(name)
            )
            meters.append(
                EmulatedMeter(device["unit"], profile, seed=len(servers) * 10 + len(meters))
            )
        server = EmulatorServer(meters)
        if bus["type"] == "rtu":
            bus["port"] = server.start_pty(data_dir / f"{bus['id']}.tty")
        else:
            bus["host"], bus["port"] = "127.0.0.1", server.serve_tcp("127.0.0.1", 0)
        servers.append(server)
    return servers


class Platform:
    """A stand-in for the carbon platform: subscribes, verifies, remembers the latest values."""

    def __init__(self, config: Config, port: int, public_key: Any) -> None:
        self.keys = {key_id(public_key): public_key}
        self.latest: dict[str, dict[str, Any]] = {}
        self.envelopes = self.verified = self.records = 0
        self.problems: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cgw-demo-platform")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            f"{config.topic_base}/readings", qos=1
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        report = verify([bytes(message.payload)], self.keys)
        self.envelopes += 1
        if report.problems:
            self.problems.extend(p.detail for p in report.problems)
            return
        self.verified += 1
        for record in json.loads(message.payload)["records"]:
            self.records += 1
            self.latest[record["device"]] = record

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _report(daemon: Daemon, platform: Platform | None, stop: threading.Event) -> None:
    while not stop.wait(REPORT_EVERY_S):
        lines = []
        for device_id, health in sorted(daemon.device_health().items()):
            line = f"  {device_id:<16} {health['last_quality'] or 'waiting':<16} polls {health['polls']}"
            record = platform.latest.get(device_id) if platform else None
            if record and record["values"]:
                values = record["values"]
                shown = [
                    f"{values[q]:g} {unit}"
                    for q, unit in (
                        ("active_power_w", "W"),
                        ("active_energy_import_kwh", "kWh"),
                        ("voltage_l1_v", "V"),
                    )
                    if q in values
                ]
                line += "  " + ", ".join(shown)
            lines.append(line)
        if platform:
            head = (
                f"platform received {platform.envelopes} envelopes ({platform.records} readings), "
                f"{platform.verified} verified, {len(platform.problems)} failed"
            )
        else:
            head = f"uplink offline: {daemon.committed_records} readings buffered locally"
        print(head + "\n" + "\n".join(lines), flush=True)


def run_demo(data_dir: Path, duration_s: float | None, with_broker: bool = True) -> int:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    data, origin = example_config()
    data["gateway"].update(data_dir=str(data_dir), runtime_dir=str(data_dir / "run"))
    # A development machine's kernel may never call its clock synchronised (containers).
    data["gateway"]["clock"] = "trusted"
    emulators = start_emulators(data, origin, data_dir)
    broker: LocalBroker | None = None
    try:
        if not with_broker:
            raise RuntimeError("--no-broker given")
        broker = LocalBroker(workdir=data_dir).start()
        data["mqtt"].update(host="127.0.0.1", port=broker.port)
    except (OSError, RuntimeError) as exc:
        data["mqtt"]["enabled"] = False
        print(
            f"uplink OFFLINE: no local MQTT broker ({exc}); readings are buffered only", flush=True
        )
    config = parse(data, origin)
    daemon = Daemon(config)
    print(
        f"cgw demo: gateway {config.gateway_id}, {len(config.devices)} emulated meters, buffer in {data_dir}\n"
        f"  signing key id {daemon.signer.kid}; "
        + (
            f"broker on 127.0.0.1:{broker.port}, topics {config.topic_base}/#"
            if broker
            else "no broker"
        )
        + "\n  Ctrl-C stops.",
        flush=True,
    )
    platform = Platform(config, broker.port, daemon.signer.public) if broker else None
    stop = threading.Event()
    reporter = threading.Thread(target=_report, args=(daemon, platform, stop), daemon=True)
    reporter.start()
    if duration_s is not None:
        threading.Timer(duration_s, daemon.stop_requested.set).start()
    try:
        return daemon.run()
    finally:
        stop.set()
        if platform:
            platform.stop()
            print(
                f"platform verified {platform.verified} of {platform.envelopes} envelopes",
                flush=True,
            )
        if broker:
            broker.stop()
        for emulator in emulators:
            emulator.stop()
