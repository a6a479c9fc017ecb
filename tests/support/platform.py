"""A platform-side subscriber: a real paho client collecting what the gateway publishes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class Received:
    topic: str
    payload: bytes
    retained: bool


@dataclass
class Subscriber:
    """Subscribes with a persistent session (QoS 1), so a broker that keeps sessions across a
    restart (persistence on) queues what arrives while this client is reconnecting."""

    port: int
    topic: str = "cgw/v1/#"
    messages: list[Received] = field(default_factory=list)
    client_id: str = field(default_factory=lambda: f"platform-{uuid.uuid4().hex[:8]}")
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain))
            )

    def __enter__(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber did not get its SUBACK"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, leaf: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith("/" + leaf)]

    def envelopes(self) -> list[bytes]:
        return [m.payload for m in self.on("readings")]

    def seqs(self) -> set[int]:
        return {json.loads(p)["seq"] for p in self.envelopes()}

    def last_json(self, leaf: str) -> dict:
        return json.loads(self.on(leaf)[-1].payload)


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
