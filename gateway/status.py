"""`cgw status`: the buffer's backlog, the uplink, each device's health and the signing key."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from buffer.keys import fingerprint, key_id, load_public_key, public_key_text
from gateway.config import Config
from gateway.daemon import open_buffer

STALE_AFTER_S = 15


def public_key(config: Config) -> Ed25519PublicKey | None:
    pub = config.signing_key.with_suffix(".pub")
    try:
        if pub.exists():
            return load_public_key(pub.read_text(encoding="ascii"))
        private = serialization.load_pem_private_key(config.signing_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    return private.public_key() if isinstance(private, Ed25519PrivateKey) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(config: Config) -> dict[str, Any]:
    status: dict[str, Any] = {
        "gateway": config.gateway_id,
        "site": config.site,
        "config": str(config.path),
    }
    key = public_key(config)
    status["key"] = (
        None
        if key is None
        else {
            "kid": key_id(key),
            "fingerprint": fingerprint(key),
            "public_key": public_key_text(key),
        }
    )
    db = config.data_dir / "buffer.db"
    if db.exists():
        try:
            buffer = open_buffer(config, read_only=True)
            status["buffer"] = {"path": str(db), **buffer.stats().__dict__}
            buffer.close()
        except sqlite3.Error as exc:
            status["buffer"] = {"path": str(db), "error": str(exc)}
    else:
        status["buffer"] = None
    runtime: dict[str, Any] | None = None
    with contextlib.suppress(OSError, ValueError):
        runtime = json.loads((config.runtime_dir / "status.json").read_text(encoding="utf-8"))
    if runtime is not None:
        fresh = time.time() * 1000 - runtime.get("ts", 0) < STALE_AFTER_S * 1000
        runtime["running"] = (
            bool(runtime.get("running")) and fresh and _alive(int(runtime.get("pid", 0)))
        )
    status["daemon"] = runtime
    return status


def _when(ms: int | None) -> str:
    if not ms:
        return "never"
    age = time.time() - ms / 1000
    stamp = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({age:.0f} s ago)"


def render(status: dict[str, Any]) -> str:
    lines = [f"gateway {status['gateway']} at site {status['site']}  ({status['config']})"]
    key = status["key"]
    lines.append(
        "signing key: none yet (created on first start)"
        if key is None
        else f"signing key: id {key['kid']}  {key['fingerprint']}\n  public key {key['public_key']}"
    )
    buffer = status["buffer"]
    if buffer is None:
        lines.append("buffer: not created yet (the daemon has not run)")
    elif "error" in buffer:
        lines.append(f"buffer: {buffer['path']}: cannot read: {buffer['error']}")
    else:
        lines.append(
            f"buffer: last seq {buffer['last_seq']}, backlog {buffer['backlog_envelopes']} envelopes / "
            f"{buffer['backlog_records']} readings, oldest undelivered {_when(buffer['oldest_undelivered_ms'])}"
        )
        lines.append(
            f"  unsealed {buffer['pending_records']}, last delivery {_when(buffer['last_delivered_ms'])}, "
            f"disk {buffer['used_bytes'] / 1e6:.1f} of {buffer['quota_bytes'] / 1e6:.0f} MB"
        )
        if buffer["dropped_records"]:
            lines.append(
                f"  DROPPED {buffer['dropped_records']} readings in {buffer['dropped_envelopes']} envelopes "
                "(quota exceeded or disk full)"
            )
    daemon = status["daemon"]
    if daemon is None:
        lines.append("daemon: not running (no status file)")
        return "\n".join(lines)
    lines.append(
        f"daemon: {'running' if daemon['running'] else 'NOT running'} (pid {daemon['pid']}, "
        f"status of {_when(daemon['ts'])})"
    )
    uplink = daemon.get("uplink")
    if uplink is None:
        lines.append("uplink: disabled in the config (buffer only)")
    else:
        state = "connected" if uplink["connected"] else "OFFLINE"
        lines.append(
            f"uplink: {state} to {uplink['broker']}, last publish {_when(uplink['last_publish_ms'])}"
        )
        if uplink.get("last_error"):
            lines.append(f"  last error: {uplink['last_error']}")
    for bus_id, bus in sorted(daemon.get("buses", {}).items()):
        verdict = "keeps up" if bus["keeps_up"] else "CANNOT KEEP UP with its poll intervals"
        lines.append(f"bus {bus_id}: busy {bus['demand']:.0%} of the time, {verdict}")
    lines += _accounting(daemon.get("accounting"))
    for device_id, health in sorted(daemon.get("devices", {}).items()):
        answer = (
            "ok"
            if health["last_quality"] in ("ok", "out_of_range")
            else health["last_quality"] or "not polled yet"
        )
        line = f"  {device_id:<20} {answer:<16} polls {health['polls']:<7} failures {health['failures']:<5}"
        if health.get("last_latency_ms") is not None:
            line += f" latency {health['last_latency_ms']} ms"
        if health.get("backed_off_s"):
            line += f" backed off to every {health['backed_off_s']:g} s"
        if health.get("last_error"):
            line += f"  ({health['last_error']})"
        lines.append(line)
    return "\n".join(lines)


def _accounting(accounting: dict[str, Any] | None) -> list[str]:
    if not accounting:
        return []
    lines = []
    if not accounting["clock_synced"]:
        lines.append(
            f"clock: NOT synchronised yet: {accounting['held_readings']} readings held for "
            "accounting until it is (check NTP)"
        )
    today = accounting.get("today") or {}
    if today.get("expected"):
        rate = today["rate"] or 0.0
        verdict = "meets" if today["meets_required"] else "BELOW"
        lines.append(
            f"completeness {today['day']}: {today['received']} of {today['expected']} readings "
            f"({rate:.1%}), {verdict} the 90 % upload rate"
        )
        for device, device_rate in sorted(today.get("devices", {}).items()):
            if device_rate is not None and device_rate < 0.9:
                lines.append(f"  {device}: {device_rate:.1%} of its readings today")
    alarms = accounting.get("active_alarms", [])
    lines.append(f"alarms: {len(alarms)} active" if alarms else "alarms: none active")
    lines += (f"  {a['severity'].upper():<8} {a['message']}" for a in alarms)
    return lines
