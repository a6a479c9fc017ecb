"""A platform-side subscriber for the drain benchmarks, run as its own process (as the platform is).

`python -m bench.subscriber --port P --topic T [--keys FILE]` subscribes at QoS 1 and counts what
arrives; with `--keys` (base64 public keys, one a line) it also verifies every envelope with the
platform's verifier (buffer.verify.Verifier) and counts the problems. A `$share/...` topic makes
it one of several consumers sharing the stream. It
prints `ready` once subscribed, then answers commands read from stdin, one a line: `report` prints
the counts as one JSON line, `reset` zeroes them, `quit` (or end of input) stops it. `Platform`
starts it and asks.
"""

from __future__ import annotations

import argparse
import json
import select
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.common import Children, python
from buffer.keys import key_id, load_public_key
from buffer.verify import Verifier

RECORD_START = b'{"device":'  # every reading record opens so (keys in JCS order)
SEQ_FIELD = b',"seq":'


def envelope_seq(payload: bytes | bytearray) -> int | None:
    """The seq of an envelope without parsing it: `seq` follows the records in JCS key order."""
    at = payload.rfind(SEQ_FIELD)
    if at < 0:
        return None
    start = at + len(SEQ_FIELD)
    end = payload.find(b",", start)
    digits = payload[start:end]
    return int(digits) if digits.isdigit() else None


class Counter:
    def __init__(self, keys: dict[str, Ed25519PublicKey] | None = None) -> None:
        self.lock = threading.Lock()
        self.keys = keys
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.messages = 0
            self.records = 0
            self.payload_bytes = 0
            self.seqs: set[int] = set()
            self.first: float | None = None
            self.last: float | None = None
            self.verifier = Verifier(self.keys) if self.keys is not None else None
            self.problems = 0

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        payload = message.payload
        now = time.monotonic()
        seq = envelope_seq(payload)
        with self.lock:
            self.messages += 1
            self.records += payload.count(RECORD_START)
            self.payload_bytes += len(payload)
            if seq is not None:
                self.seqs.add(seq)
            if self.verifier is not None:
                self.problems += self.verifier.add(bytes(payload), message.topic) is not None
            self.first = now if self.first is None else self.first
            self.last = now

    def report(self) -> dict[str, object]:
        with self.lock:
            return {
                "messages": self.messages,
                "records": self.records,
                "payload_bytes": self.payload_bytes,
                "distinct_seqs": len(self.seqs),
                "problems": self.problems,
                "first_monotonic": self.first,
                "last_monotonic": self.last,
            }


class Platform:
    """The subscriber process (bench.subscriber), driven over its stdin and stdout."""

    def __init__(self, children: Children, port: int, topic: str, keys: Path | None = None) -> None:
        verify = ["--keys", str(keys)] if keys is not None else []
        self.process = children.start(
            [python(), "-m", "bench.subscriber", "--port", str(port), "--topic", topic, *verify],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,  # unbuffered, so that select() sees every line not yet read
        )
        if self._line(15) != "ready":
            raise RuntimeError("the platform subscriber did not subscribe")

    def _line(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            raise TimeoutError("the platform subscriber did not answer")
        return self.process.stdout.readline().decode().strip()

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        return self._line(15)

    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.ask("report")))

    def reset(self) -> None:
        self.ask("reset")

    def wait_for(self, records: int, timeout_s: float) -> dict[str, Any]:
        """Counts once `records` have arrived, or as they are when arrivals stop for `timeout_s`."""
        report = self.report()
        quiet_since = time.monotonic()
        while report["records"] < records and time.monotonic() - quiet_since < timeout_s:
            time.sleep(0.05)
            latest = self.report()
            if latest["records"] != report["records"]:
                quiet_since = time.monotonic()
            report = latest
        return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriber")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--keys", type=Path, help="verify with these public keys")
    args = parser.parse_args()
    keys = None
    if args.keys:
        loaded = [load_public_key(line) for line in args.keys.read_text().split()]
        keys = {key_id(k): k for k in loaded}
    counter = Counter(keys)
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-platform-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(args.topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.on_message = counter.on_message
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            print("error: no SUBACK", flush=True)
            return 1
        print("ready", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "report":
                print(json.dumps(counter.report()), flush=True)
            elif command == "reset":
                counter.reset()
                print("ok", flush=True)
            elif command == "quit":
                break
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
