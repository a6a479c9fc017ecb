"""`cgw check`: the commissioning check of a whole config. Reads every device twice, judges the
values as an electrician would (voltage, frequency, reversed CTs, counters), times each bus,
connects to the broker and looks at the clock. It writes nothing and leaves the daemon alone.

Exit status: 0 when everything is OK or only warnings remain, 1 when something FAILs (with
--strict, warnings count as failures too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from drivers.snapshot import OK as QUALITY_OK
from drivers.snapshot import OUT_OF_RANGE, Snapshot
from drivers.vocabulary import vocabulary
from gateway.applied import effective
from gateway.config import AnyDevice, Bus, Config, MqttConfig, SerialBus
from gateway.poller import LineReader
from gateway.tools.port import busy_message, port_holders
from gateway.tools.text import table

OK, WARN, FAIL = "OK", "WARN", "FAIL"
EARLIEST_PLAUSIBLE_YEAR = 2025  # this software did not exist before: an earlier clock is wrong
REVERSED_CT_W = 20.0  # below this a negative phase power is noise, not a reversed CT
COUNTER_RESOLUTION_KWH = 0.01  # the coarsest step common meters count in
BROKER_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Finding:
    status: str
    subject: str  # a device, a bus, "broker", "clock"
    check: str
    detail: str


@dataclass(frozen=True)
class Limits:
    volts: tuple[float, float]
    line_volts: tuple[float, float]
    hertz: tuple[float, float]

    @classmethod
    def nominal(cls, volts: float, hertz: float) -> Limits:
        # 180-260 V around 230 V: the band a healthy low-voltage supply stays in.
        low, high = 180 / 230, 260 / 230
        line = volts * 3**0.5
        return cls(
            (volts * low, volts * high), (line * low, line * high), (hertz - 0.5, hertz + 0.5)
        )


# -- devices ---------------------------------------------------------------------------------


def judge_values(
    device_id: str, first: Snapshot, second: Snapshot, seconds: float, limits: Limits
) -> list[Finding]:
    """Voltage, frequency, reversed CTs and counters from two readings `seconds` apart."""
    findings: list[Finding] = []
    values = second.values
    words = vocabulary()
    volts = {q: v for q, v in values.items() if words[q].unit == "V"}
    if volts:
        wrong = [
            f"{q} {v:.1f} V"
            for q, v in sorted(volts.items())
            if not _within(v, limits.line_volts if q.count("_l") == 2 else limits.volts)
        ]
        detail = (
            ", ".join(wrong) if wrong else f"{min(volts.values()):.1f}..{max(volts.values()):.1f} V"
        )
        findings.append(
            Finding(
                WARN if wrong else OK,
                device_id,
                "voltage",
                detail + (" outside the plausible range" if wrong else ""),
            )
        )
    if "frequency_hz" in values:
        hz = values["frequency_hz"]
        good = _within(hz, limits.hertz)
        findings.append(
            Finding(
                OK if good else WARN,
                device_id,
                "frequency",
                f"{hz:.2f} Hz"
                + ("" if good else f" outside {limits.hertz[0]:g}-{limits.hertz[1]:g} Hz"),
            )
        )
    findings += _power_direction(device_id, values)
    findings += _counters(device_id, first.values, values, seconds)
    return findings


def _within(value: float, band: tuple[float, float]) -> bool:
    return band[0] <= value <= band[1]


def _power_direction(device_id: str, values: dict[str, float]) -> list[Finding]:
    findings = []
    phases = {
        p: values[f"active_power_l{p}_w"] for p in (1, 2, 3) if f"active_power_l{p}_w" in values
    }
    for phase, watts in sorted(phases.items()):
        if watts < -REVERSED_CT_W:
            findings.append(
                Finding(
                    WARN,
                    device_id,
                    f"power L{phase}",
                    f"{watts:.0f} W: negative; likely reversed CT on L{phase} (or this phase really exports)",
                )
            )
    total = values.get("active_power_w")
    if total is not None and total < -REVERSED_CT_W:
        findings.append(
            Finding(
                WARN,
                device_id,
                "total power",
                f"{total:.0f} W: negative; fine on a generator/export meter, "
                "on a load it means reversed CTs or swapped wiring",
            )
        )
    if phases and not findings:
        shown = ", ".join(f"L{p} {w:.0f} W" for p, w in sorted(phases.items()))
        findings.append(Finding(OK, device_id, "power direction", shown))
    return findings


def _counters(
    device_id: str, before: dict[str, float], after: dict[str, float], seconds: float
) -> list[Finding]:
    findings = []
    words = vocabulary()
    power = after.get("active_power_w", 0.0)
    expected_kwh = abs(power) * seconds / 3.6e6
    for quantity in sorted(q for q in after if q in before and words[q].kind == "counter"):
        change = after[quantity] - before[quantity]
        if change < 0:
            findings.append(
                Finding(
                    FAIL,
                    device_id,
                    quantity,
                    f"went down by {-change:g} in {seconds:g} s: a counter never decreases "
                    "(wrong register or scaling?)",
                )
            )
            continue
        flowing = (quantity == "active_energy_import_kwh" and power > 0) or (
            quantity == "active_energy_export_kwh" and power < 0
        )
        if change == 0 and flowing and expected_kwh >= COUNTER_RESOLUTION_KWH:
            findings.append(
                Finding(
                    WARN,
                    device_id,
                    quantity,
                    f"did not move in {seconds:g} s although {power:.0f} W flow",
                )
            )
        elif change > 0:
            findings.append(Finding(OK, device_id, quantity, f"+{change:.4g} in {seconds:g} s"))
        else:
            findings.append(
                Finding(
                    OK, device_id, quantity, f"flat over {seconds:g} s: too little energy to count"
                )
            )
    return findings


def _daemon_health(config: Config) -> dict[str, dict[str, object]] | None:
    """The running daemon's per-device health from its status file, if it is running."""
    try:
        status = json.loads((config.runtime_dir / "status.json").read_text(encoding="utf-8"))
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    devices = status.get("devices")
    return devices if isinstance(devices, dict) else None


def _from_daemon(
    config: Config, bus: SerialBus, devices: list[AnyDevice], reason: str
) -> list[Finding]:
    health = _daemon_health(config) or {}
    findings = [
        Finding(
            WARN,
            bus.id,
            "port busy",
            reason + "; values not checked, device answers taken from the running gateway",
        )
    ]
    for device in devices:
        h = health.get(device.id)
        if h is None:
            findings.append(
                Finding(
                    WARN,
                    device.id,
                    "answers",
                    "unknown: port busy and no status from the running gateway",
                )
            )
        elif h.get("last_quality") in (QUALITY_OK, OUT_OF_RANGE):
            findings.append(
                Finding(
                    OK,
                    device.id,
                    "answers",
                    f"per the running gateway (last poll {h.get('last_latency_ms')} ms)",
                )
            )
        else:
            findings.append(
                Finding(
                    FAIL,
                    device.id,
                    "answers",
                    f"per the running gateway: {h.get('last_error') or h.get('last_quality')}",
                )
            )
    return findings


def check_bus(
    config: Config, bus: Bus, devices: list[AnyDevice], seconds: float, limits: Limits
) -> list[Finding]:
    if isinstance(bus, SerialBus):
        holders = port_holders(bus.port)
        if holders:
            return _from_daemon(config, bus, devices, busy_message(bus.port, holders))
    reader = LineReader(bus, devices)
    try:
        first, durations = _poll_all(reader, bus, devices)
        time.sleep(seconds)
        second, _ = _poll_all(reader, bus, devices)
    finally:
        reader.close()
    findings: list[Finding] = []
    for device in devices:
        a, b = first[device.id], second[device.id]
        answered = [s for s in (a, b) if s.quality in (QUALITY_OK, OUT_OF_RANGE)]
        if not answered:
            findings.append(Finding(FAIL, device.id, "answers", b.error or b.quality))
            continue
        if len(answered) == 1:
            failed = b if a in answered else a
            findings.append(
                Finding(WARN, device.id, "answers", f"one of two reads failed: {failed.error}")
            )
            continue
        findings.append(Finding(OK, device.id, "answers", f"{len(b.values)} quantities"))
        if b.flags:
            findings.append(
                Finding(
                    WARN,
                    device.id,
                    "values",
                    "flagged: " + ", ".join(f"{q} {f}" for q, f in sorted(b.flags.items())),
                )
            )
        findings += judge_values(device.id, a, b, (b.ts_ms - a.ts_ms) / 1000, limits)
    findings.append(_keeps_up(bus, devices, durations))
    return findings


def _poll_all(
    reader: LineReader, bus: Bus, devices: list[AnyDevice]
) -> tuple[dict[str, Snapshot], dict[str, float]]:
    snapshots, durations = {}, {}
    for device in devices:
        started = time.monotonic()
        snapshots[device.id] = reader.read(device, bus.timeout_s)[0]
        durations[device.id] = time.monotonic() - started
    return snapshots, durations


def _keeps_up(bus: Bus, devices: list[AnyDevice], durations: dict[str, float]) -> Finding:
    """Whether the bus has time for its polls: the share of bus time they need at their intervals
    (a failing device still costs its timeout)."""
    demand = sum(durations[d.id] / d.interval_s for d in devices)
    total_ms = sum(durations.values()) * 1000
    shortest = min(d.interval_s for d in devices)
    detail = (
        f"one poll of all {len(devices)} devices takes {total_ms:.0f} ms; "
        f"shortest interval {shortest:g} s; bus busy {demand:.0%}"
    )
    if demand >= 1:
        return Finding(
            FAIL,
            bus.id,
            "keeps up",
            detail + ": lengthen intervals, read fewer quantities or split the bus",
        )
    return Finding(WARN if demand >= 0.8 else OK, bus.id, "keeps up", detail)


# -- broker and clock ------------------------------------------------------------------------


def check_broker(settings: MqttConfig) -> Finding:
    where = f"{settings.host}:{settings.port}"
    if not settings.enabled:
        return Finding(
            OK, "broker", "reachable", "MQTT disabled in the config: readings stay in the buffer"
        )
    protocol = (
        MQTTProtocolVersion.MQTTv5 if settings.protocol == "5" else MQTTProtocolVersion.MQTTv311
    )
    # Never the daemon's client id: the broker would disconnect the running gateway.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{settings.client_id}-check-{os.getpid()}",
        protocol=protocol,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    try:
        if settings.tls is not None:
            tls = settings.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        answered = threading.Event()
        outcome: list[str] = []

        def on_connect(
            _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object = None
        ) -> None:
            outcome.append(str(reason))
            answered.set()

        client.on_connect = on_connect
        client.connect(settings.host, settings.port, keepalive=10)
        deadline = time.monotonic() + BROKER_TIMEOUT_S
        while not answered.is_set() and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Finding(FAIL, "broker", "reachable", f"cannot connect to {where}: {exc}")
    finally:
        client.disconnect()
    if not outcome:
        return Finding(
            FAIL,
            "broker",
            "reachable",
            f"{where} accepted TCP but gave no MQTT answer in {BROKER_TIMEOUT_S:g} s",
        )
    if outcome[0] != "Success":
        return Finding(
            FAIL,
            "broker",
            "reachable",
            f"{where} refused the connection: {outcome[0]} (check username/password/certificates)",
        )
    return Finding(OK, "broker", "reachable", f"{where} accepts the gateway's credentials")


def clock_synchronised() -> bool | None:
    """True/False when the system can tell, None when it cannot."""
    timedatectl = shutil.which("timedatectl")
    if timedatectl is not None:
        try:
            answer = subprocess.run(
                [timedatectl, "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.TimeoutExpired):
            answer = None
        if answer is not None and answer.returncode == 0 and answer.stdout.strip() in ("yes", "no"):
            return answer.stdout.strip() == "yes"
    if Path("/run/systemd/timesync").is_dir():
        return Path("/run/systemd/timesync/synchronized").exists()
    return None


def check_clock(now: datetime | None = None, synchronised: bool | None = None) -> list[Finding]:
    now = now or datetime.now(UTC)
    findings = []
    if now.year < EARLIEST_PLAUSIBLE_YEAR:
        findings.append(
            Finding(
                FAIL,
                "clock",
                "date",
                f"{now:%Y-%m-%d %H:%M} UTC is before {EARLIEST_PLAUSIBLE_YEAR}: "
                "the clock is wrong; readings would carry wrong times",
            )
        )
    else:
        findings.append(Finding(OK, "clock", "date", f"{now:%Y-%m-%d %H:%M} UTC"))
    if synchronised is None:
        findings.append(
            Finding(
                WARN,
                "clock",
                "synchronised",
                "unknown: no timedatectl and no systemd-timesyncd state to ask",
            )
        )
    elif synchronised:
        findings.append(Finding(OK, "clock", "synchronised", "NTP synchronised"))
    else:
        findings.append(
            Finding(
                WARN,
                "clock",
                "synchronised",
                "not NTP synchronised: check network access to a time server",
            )
        )
    return findings


# -- the whole check -------------------------------------------------------------------------


def run_check(config: Config, seconds: float, limits: Limits) -> list[Finding]:
    findings: list[Finding] = []
    results: dict[str, list[Finding]] = {}
    threads = []
    for bus in config.buses:
        devices = [d for d in config.devices if d.bus == bus.id]
        if not devices:
            continue

        def run(bus: Bus = bus, devices: list[AnyDevice] = devices) -> None:
            results[bus.id] = check_bus(config, bus, devices, seconds, limits)

        thread = threading.Thread(target=run, name=f"check-{bus.id}", daemon=True)
        thread.start()
        threads.append(thread)
    broker = check_broker(config.mqtt)
    for thread in threads:
        thread.join()
    for bus in config.buses:
        findings += results.get(bus.id, [])
    if not config.devices:
        findings.append(Finding(FAIL, "config", "devices", "no [[devices]] configured"))
    findings.append(broker)
    findings += check_clock(synchronised=clock_synchronised())
    return findings


def verdict(findings: list[Finding]) -> str:
    fails = sum(f.status == FAIL for f in findings)
    warns = sum(f.status == WARN for f in findings)
    if fails:
        return f"FAIL: {fails} problem(s) to fix" + (
            f", {warns} warning(s) to review" if warns else ""
        )
    if warns:
        return f"OK with {warns} warning(s) to review"
    return "OK: everything checked is fine"


def exit_status(findings: list[Finding], strict: bool) -> int:
    bad = (FAIL, WARN) if strict else (FAIL,)
    return 1 if any(f.status in bad for f in findings) else 0


def cmd_check(args: argparse.Namespace) -> int:
    config = effective(Path(args.config))
    limits = Limits.nominal(args.nominal_voltage, args.frequency)
    findings = run_check(config, args.seconds, limits)
    if args.json:
        print(
            json.dumps(
                {"verdict": verdict(findings), "findings": [asdict(f) for f in findings]}, indent=2
            )
        )
    else:
        print(
            table(
                ("", "subject", "check", "detail"),
                [(f.status, f.subject, f.check, f.detail) for f in findings],
            )
        )
        print(verdict(findings))
    return exit_status(findings, args.strict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="time between the two reads of each device (default 5)",
    )
    parser.add_argument(
        "--nominal-voltage",
        type=float,
        default=230.0,
        help="phase-to-neutral nominal voltage (default 230; line-to-line is x1.73)",
    )
    parser.add_argument(
        "--frequency",
        type=float,
        default=50.0,
        choices=[50.0, 60.0],
        help="grid frequency (default 50)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
