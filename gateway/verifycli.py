"""`cgw verify`: the verifier (buffer/verify.py) on a gateway's buffer, a capture file, or a live
subscription, with the registered keys; a report per gateway and device, text or JSON.

Exit status: 0 everything verified and complete; 1 tampered or unverifiable messages; 3 verified
but with sequence gaps; 2 usage mistakes.
"""

from __future__ import annotations

import argparse
import json
import ssl
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from buffer.keys import key_id, load_public_key
from buffer.verify import STREAMS, Report, Verifier, topic_parts

EX_USAGE = 2


class VerifyError(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_argument_group("what to verify (default: this gateway's buffer, --config)")
    source.add_argument(
        "--capture",
        help="a file of messages, one per line: payloads, or `topic payload` (mosquitto_sub -v)",
    )
    source.add_argument(
        "--broker", metavar="URL", help="subscribe live: mqtt://host[:port] or mqtts://host[:port]"
    )
    source.add_argument(
        "--topic",
        default="cgw/v1/+/+/+",
        help="with --broker: the topic filter, e.g. cgw/v1/+/+/readings or "
        "$share/verifiers/cgw/v1/+/+/+ (default cgw/v1/+/+/+)",
    )
    source.add_argument("--duration", type=float, help="with --broker: seconds to listen")
    source.add_argument("--count", type=int, help="with --broker: stop after this many envelopes")
    source.add_argument("--username", help="with --broker: MQTT user name")
    source.add_argument("--password-file", type=Path, help="with --broker: the MQTT password")
    source.add_argument("--ca-file", type=Path, help="with mqtts://: the broker's CA")
    source.add_argument("--cert-file", type=Path, help="with mqtts://: a client certificate")
    source.add_argument("--key-file", type=Path, help="with mqtts://: its key")
    keys = p.add_argument_group("the registered keys (default for the buffer: its own key)")
    keys.add_argument(
        "--public-key", action="append", help="a public key (base64 or a file); repeatable"
    )
    keys.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help='a registry, TOML: [gateways.ID] public_key = "…" (or public_keys = [...]); '
        "a key then vouches only for its own gateway",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report")


def registered_keys(
    args: argparse.Namespace,
) -> tuple[dict[str, Ed25519PublicKey], dict[str, str]]:
    """(key id -> key, key id -> the gateway it is registered for)."""
    keys: dict[str, Ed25519PublicKey] = {}
    owners: dict[str, str] = {}
    for text in args.public_key or []:
        candidate = Path(text)
        try:
            material = candidate.read_text(encoding="ascii") if candidate.exists() else text
            key = load_public_key(material)
        except (OSError, ValueError) as exc:
            raise VerifyError(
                f"--public-key {text}: not an Ed25519 public key ({exc})", EX_USAGE
            ) from None
        keys[key_id(key)] = key
    if args.keys:
        try:
            registry = tomllib.loads(args.keys.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise VerifyError(f"--keys {args.keys}: cannot read: {exc}", EX_USAGE) from None
        gateways = registry.get("gateways")
        if not isinstance(gateways, dict):
            raise VerifyError(f"{args.keys}: gateways: must be a table of [gateways.ID]", EX_USAGE)
        for gateway, entry in gateways.items():
            texts = entry.get("public_keys", []) if isinstance(entry, dict) else []
            if isinstance(entry, dict) and "public_key" in entry:
                texts = [entry["public_key"], *texts]
            if not texts:
                raise VerifyError(
                    f"{args.keys}: gateways.{gateway}: public_key is required", EX_USAGE
                )
            for i, text in enumerate(texts):
                try:
                    key = load_public_key(str(text))
                except ValueError:
                    raise VerifyError(
                        f"{args.keys}: gateways.{gateway}: key {i + 1} is not an Ed25519 public key",
                        EX_USAGE,
                    ) from None
                keys[key_id(key)] = key
                owners[key_id(key)] = gateway
    return keys, owners


def feed(verifier: Verifier, topic: str | None, payload: bytes) -> bool:
    """One message; True when it was an envelope."""
    parts = topic_parts(topic) if topic else None
    leaf = parts[2] if parts else None
    if leaf == "meta":
        verifier.add_meta(payload, topic)
        return False
    if leaf is not None and leaf not in STREAMS:
        return False  # status, commands and replies: not envelopes
    verifier.add(payload, topic)
    return True


def capture_lines(path: Path) -> Iterator[tuple[str | None, bytes]]:
    """(topic, payload) per line: `mosquitto_sub -v` lines start with the topic."""
    with path.open("rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            if line.lstrip().startswith(b"{"):
                yield None, line
            else:
                topic, _, payload = line.partition(b" ")
                yield topic.decode("utf-8", "replace"), payload


def listen(args: argparse.Namespace, verifier: Verifier) -> int:
    """Subscribe and verify until --duration, --count or Ctrl-C. Returns envelopes received."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    url = urlsplit(args.broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise VerifyError(
            f"--broker {args.broker}: expected mqtt://host[:port] or mqtts://…", EX_USAGE
        )
    tls = url.scheme == "mqtts"
    port = url.port or (8883 if tls else 1883)
    lock = threading.Lock()
    received = 0
    done = threading.Event()
    failed: list[str] = []

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        with lock:
            if feed(verifier, message.topic, bytes(message.payload)):
                received += 1
                if args.count and received >= args.count:
                    done.set()

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            failed.append(f"broker refused the connection: {reason}")
            done.set()
            return
        client.subscribe(args.topic, qos=1)
        meta = meta_filter(args.topic)
        if meta:
            client.subscribe(meta, qos=1)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"cgw-verify-{time.time_ns() % 10**9}"
    )
    client.on_message = on_message
    client.on_connect = on_connect
    if args.username:
        password = args.password_file.read_text().strip() if args.password_file else None
        client.username_pw_set(args.username, password)
    if tls:
        client.tls_set(
            ca_certs=str(args.ca_file) if args.ca_file else None,
            certfile=str(args.cert_file) if args.cert_file else None,
            keyfile=str(args.key_file) if args.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    try:
        client.connect(url.hostname, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise VerifyError(f"cannot connect to {url.hostname}:{port}: {exc}") from None
    client.loop_start()
    try:
        done.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    if failed:
        raise VerifyError(failed[0])
    return received


def meta_filter(topic: str) -> str | None:
    """The retained meta of the same gateways as a data filter (for device intervals)."""
    levels = topic.split("/")
    if levels[0] == "$share":
        levels = levels[2:]
    if len(levels) < 4 or levels[-1] == "meta":
        return None
    return "/".join([*levels[:-3], levels[-3], levels[-2], "meta"])


def render(source: str, report: Report) -> str:
    lines = [f"verified {source}"]
    for gateway, r in sorted(report.gateways.items()):
        lines.append(
            f"  gateway {gateway}: {r.envelopes} envelopes, {r.records} records, "
            f"seq {r.first_seq}-{r.last_seq}, {r.duplicates} identical copies (re-sent or replayed), "
            f"completeness {r.completeness:.2%}"
            + ("" if r.completeness >= 0.9 else " (below the 90 % upload rate)")
        )
        for first, last in r.missing:
            lines.append(
                f"    missing seq {first}-{last}" if first != last else f"    missing seq {first}"
            )
        for device, d in sorted(r.devices.items()):
            rate = d.completeness
            owed = "" if rate is None else f" of {d.expected} owed ({rate:.1%})"
            lines.append(f"    device {device}: {d.readings} readings{owed}, {d.ok} with values")
    for p in report.problems:
        lines.append(f"  {p.kind.upper()}: gateway {p.gateway} seq {p.seq}: {p.detail}")
    if not report.gateways and not report.problems:
        lines.append("  no envelopes")
    return "\n".join(lines)


def outcome(report: Report) -> int:
    if report.tampered:
        return 1
    return 3 if report.gaps else 0


def print_report(args: argparse.Namespace, source: str, report: Report) -> int:
    if args.json:
        print(json.dumps({"source": source, **report.as_dict()}, indent=2))
    else:
        print(render(source, report))
    return outcome(report)
