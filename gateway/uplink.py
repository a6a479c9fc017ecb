"""The MQTT uplink: publishes sealed envelopes at QoS 1 and reports which the broker acknowledged.

Delivery is at-least-once. An envelope counts as delivered only when its PUBACK arrives; paho keeps
unacknowledged messages across reconnects and re-sends them itself, so they stay "in flight" here
and are not published twice by us. After a crash nothing is in flight and every undelivered
envelope is published again (an identical re-send).

Live data first: on each connect the newest sealed seq is the "live mark". Envelopes sealed after it
go out as soon as they are sealed; the backlog (seq <= live mark) fills whatever room is left in the
in-flight window, so a long backlog never holds back the present.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from buffer.store import Buffer
from gateway.config import Config

log = logging.getLogger("cgw.uplink")

MAX_QUEUED_COMMANDS = 100


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class UplinkState:
    connected: bool = False
    last_error: str | None = None
    connects: int = 0
    last_publish_ms: int | None = None  # last PUBACK received
    rejected: int = 0


class Uplink:
    def __init__(
        self,
        config: Config,
        meta: Callable[[], dict[str, object]],
        health: Callable[[], dict[str, object]],
    ) -> None:
        self.config = config
        self.mqtt = config.mqtt
        self.meta = meta
        self.health = health
        self.topic_base = config.topic_base
        self.state = UplinkState()
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # mid -> seq, owned by the main thread
        self._inflight_seqs: set[int] = set()
        self._just_connected = threading.Event()
        self._connack: bool | None = None  # this connection attempt: accepted, refused, no answer
        self._stopping = threading.Event()
        self._live_mark = 0
        self._live_cursor = 0
        self._backlog_cursor = 0
        # Downlink commands (name, payload) for the main thread, when platform keys are pinned.
        self.accept_commands = config.commands.enabled
        self.commands: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.commands_dropped = 0
        self.client = self._make_client()
        self._thread = threading.Thread(target=self._network, name="mqtt", daemon=True)

    def topic(self, leaf: str) -> str:
        return f"{self.topic_base}/{leaf}"

    def _make_client(self) -> mqtt.Client:
        protocol = (
            MQTTProtocolVersion.MQTTv5
            if self.mqtt.protocol == "5"
            else MQTTProtocolVersion.MQTTv311
        )
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.mqtt.client_id,
            protocol=protocol,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(self.mqtt.inflight)
        client.will_set(
            self.topic("status"),
            self._status_payload("offline", reason="connection lost"),
            qos=1,
            retain=True,
        )
        if self.mqtt.username is not None:
            client.username_pw_set(self.mqtt.username, self.mqtt.password)
        tls = self.mqtt.tls
        if tls is not None:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # Only the network thread writes to the socket. paho, run by our own thread's loop() rather
        # than loop_start(), otherwise writes from the thread that calls publish() too; two writers
        # interleave packets, the broker drops the connection as malformed and may already have
        # forwarded a corrupted envelope. With a write hook set, publish() only queues and wakes
        # the network thread.
        client.on_socket_register_write = _network_thread_writes
        client.connect_async(self.mqtt.host, self.mqtt.port, self.mqtt.keepalive_s)
        return client

    def _status_payload(self, state: str, **extra: object) -> bytes:
        payload = {
            "state": state,
            "gateway": self.config.gateway_id,
            "site": self.config.site,
            "ts": now_ms(),
            **extra,
        }
        return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()

    # -- network thread -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _network(self) -> None:
        delay = self.mqtt.reconnect_min_s
        where = f"{self.mqtt.host}:{self.mqtt.port}"
        while not self._stopping.is_set():
            self._connack = None
            try:
                self.client.reconnect()
            except (OSError, ValueError) as exc:
                self._note_error(f"cannot connect to broker {where}: {_describe(exc)}")
            else:
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stopping.is_set():
                    rc = self.client.loop(timeout=0.5)
                if self._connack is True:
                    delay = self.mqtt.reconnect_min_s  # a working connection dropped: retry soon
                elif self._connack is None and not self._stopping.is_set():
                    hint = (
                        "the TLS client certificate and key"
                        if self.mqtt.tls
                        else "the protocol version"
                    )
                    self._note_error(
                        f"broker {where} closed the connection before accepting it: check {hint}"
                    )
            # Jitter: a fleet that lost its broker together does not come back in lockstep.
            if self._stopping.wait(delay * random.uniform(0.5, 1.0)):
                break
            delay = min(delay * 2, self.mqtt.reconnect_max_s)

    def _note_error(self, message: str) -> None:
        if message != self.state.last_error:
            log.error("%s", message)
        self.state.last_error = message

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        self._connack = not reason.is_failure
        if reason.is_failure:
            self._note_error(
                f"broker {self.mqtt.host}:{self.mqtt.port} refused the connection: {reason}"
            )
            return
        self.state.connected = True
        self.state.connects += 1
        self.state.last_error = None
        log.info("connected to broker %s:%d", self.mqtt.host, self.mqtt.port)
        if self.accept_commands:
            client.subscribe(self.topic("cmd/+"), qos=1)
        self._just_connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        if self.state.connected and not self._stopping.is_set():
            log.warning("lost the broker connection: %s", reason)
        self.state.connected = False

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        self._acks.put((mid, not reason.is_failure))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        prefix = self.topic("cmd/")
        name = message.topic[len(prefix) :]
        if not message.topic.startswith(prefix) or "/" in name:
            return
        if self.commands.qsize() >= MAX_QUEUED_COMMANDS:
            self.commands_dropped += 1  # the main thread is behind: a flood, not the platform
            return
        self.commands.put((name, bytes(message.payload)))

    # -- main thread ----------------------------------------------------------------------

    def pump(self, buffer: Buffer) -> int:
        """Record acknowledgements and fill the in-flight window. Returns envelopes acknowledged."""
        delivered = []
        while True:
            try:
                mid, accepted = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue  # a status or meta message
            self._inflight_seqs.discard(seq)
            if accepted:
                delivered.append(seq)
            else:
                self.state.rejected += 1
                log.warning(
                    "broker rejected envelope seq %d; it stays buffered and is sent again",
                    seq,
                    extra={"seq": seq},
                )
        if delivered:
            stamp = now_ms()
            buffer.mark_delivered(delivered, stamp)
            self.state.last_publish_ms = stamp
        if not self.state.connected:
            return len(delivered)
        if self._just_connected.is_set():
            self._just_connected.clear()
            self._on_session_start(buffer)
        room = self.mqtt.inflight - len(self._inflight)
        if room > 0:
            for item in buffer.undelivered(self._live_cursor, None, room):
                self._send(item.seq, item.stream, item.body)
                self._live_cursor = item.seq
                room -= 1
        while room > 0 and self._backlog_cursor < self._live_mark:
            # Rows enough for `room` sends after skipping those in flight ahead of the cursor
            # (there are some only after a reconnect), rather than a whole window of bodies.
            ahead = sum(
                1 for s in self._inflight_seqs if self._backlog_cursor < s <= self._live_mark
            )
            batch = buffer.undelivered(self._backlog_cursor, self._live_mark, room + ahead)
            if not batch:
                self._backlog_cursor = self._live_mark
                break
            for item in batch:
                if room == 0:
                    break
                self._backlog_cursor = item.seq
                if item.seq not in self._inflight_seqs:
                    self._send(item.seq, item.stream, item.body)
                    room -= 1
        return len(delivered)

    def _on_session_start(self, buffer: Buffer) -> None:
        self._live_mark = buffer.last_seq
        self._live_cursor = buffer.last_seq
        self._backlog_cursor = 0
        self.publish_status()
        self.client.publish(
            self.topic("meta"),
            json.dumps(self.meta(), separators=(",", ":"), sort_keys=True),
            qos=1,
            retain=True,
        )

    def _send(self, seq: int, stream: str, body: bytes) -> None:
        info = self.client.publish(self.topic(stream), body, qos=1)
        self._inflight[info.mid] = seq
        self._inflight_seqs.add(seq)

    def publish_status(self) -> None:
        """The retained `online` status with the gateway's health (docs/CONTRACT.md)."""
        if self.state.connected:
            payload = self._status_payload("online", **self.health())
            self.client.publish(self.topic("status"), payload, qos=1, retain=True)

    def publish_reply(self, name: str, payload: bytes) -> None:
        """A command's reply, at QoS 1 (queued by paho while the broker is away)."""
        self.client.publish(self.topic(f"cmd/{name}/reply"), payload, qos=1)

    def rewind(self, first_seq: int, last_seq: int) -> None:
        """Envelopes first..last were marked undelivered again (a resend command): take them up
        with the backlog, behind the live data."""
        self._backlog_cursor = min(self._backlog_cursor, first_seq - 1)
        self._live_mark = max(self._live_mark, min(last_seq, self._live_cursor))

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish `offline` (retained), wait briefly for outstanding acks, and disconnect."""
        if self.state.connected:
            info = self.client.publish(
                self.topic("status"),
                self._status_payload("offline", reason="shutdown"),
                qos=1,
                retain=True,
            )
            deadline = time.monotonic() + timeout_s
            while not info.is_published() and time.monotonic() < deadline and self.state.connected:
                time.sleep(0.02)
        self._stopping.set()
        self.client.disconnect()
        self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive() and self.client.want_write():
            # The network thread left before writing the DISCONNECT; it is the only writer no more.
            self.client.loop_write()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    return str(exc) or type(exc).__name__


def _network_thread_writes(client: mqtt.Client, userdata: object, sock: object) -> None:
    """paho's write hook: nothing to do, the network thread's loop() selects for writing itself."""
