"""The daemon: poll threads feed snapshots in; the main loop commits, seals, publishes and prunes.

Only the main thread touches the database. Bus threads block on the serial line or socket; the MQTT
thread only moves bytes. Everything the main loop does per step is bounded, so one slow part (a
dead meter, a dead broker) never holds up the others.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections import defaultdict
from types import FrameType

from buffer.canonical import canonical
from buffer.keys import fingerprint, load_or_create, public_key_text
from buffer.store import Buffer, is_disk_full
from drivers.dlt645.identifiers import Dlt645Device
from drivers.snapshot import Snapshot
from gateway import __version__
from gateway.accounting.service import ALARMS, Accounting
from gateway.busscan import BusScans
from gateway.clock import ClockWatch, correction_event, stamp
from gateway.command_host import CommandHost
from gateway.config import AnyDevice, Config, ConfigError, PulseInput
from gateway.fleet import bus_error_rates, cpu_temperature_c
from gateway.influx import InfluxSink
from gateway.poller import BusPoller
from gateway.pulse_poller import PulsePoller, PulseReading, state_key
from gateway.uplink import Uplink, now_ms
from gateway.watchdog import Liveness, Watchdog, is_busy, longest_poll_s
from gateway.web.server import WebServer
from gateway.web.state import LiveState
from gateway.writequeue import Write, WriteQueue

log = logging.getLogger("cgw.daemon")

READINGS = "readings"
STEP_S = 0.2
# While envelopes are in flight, come back soon for their PUBACKs and refill the window: a backlog
# drains at the window's pace, not at one window per STEP_S.
DRAIN_STEP_S = 0.005
STATUS_FILE_EVERY_S = 2.0
# Another process holds the database's lock: each write attempt blocks for the busy timeout,
# so retry only this often; meanwhile readings wait in memory, at most this many.
BUSY_RETRY_S = 2.0
MAX_UNWRITTEN_RECORDS = 20_000


def open_buffer(config: Config, read_only: bool = False) -> Buffer:
    return Buffer(
        config.data_dir / "buffer.db",
        gateway=config.gateway_id,
        site=config.site,
        envelope_max_records=config.buffer.envelope_max_records,
        quota_bytes=int(config.buffer.quota_mb * 1024 * 1024),
        read_only=read_only,
    )


def device_meta(device: AnyDevice) -> dict[str, object]:
    """How the platform learns what a device is and which quantities, in which units, it sends."""
    common = {
        "id": device.id,
        "bus": device.bus,
        "interval_s": device.interval_s,
        "quantities": device.quantity_units(),
    }
    if isinstance(device, Dlt645Device):
        return {**common, "protocol": "dlt645", "address": device.address}
    profile = device.profile
    return {
        **common,
        "protocol": "modbus",
        "unit": device.unit,
        "profile": profile.name,
        "model": profile.model,
        "maker": profile.maker,
    }


def pulse_input_meta(pulse_input: PulseInput) -> dict[str, object]:
    """A pulse input as the platform sees it: a device whose one quantity is a pulse total."""
    where = (
        {"chip": pulse_input.chip, "line": pulse_input.line} if pulse_input.source == "gpio" else {}
    )
    return {
        "id": pulse_input.id,
        "protocol": "pulse",
        "source": pulse_input.source,
        **where,
        "pulses_per_unit": pulse_input.pulses_per_unit,
        "interval_s": pulse_input.interval_s,
        "quantities": pulse_input.quantity_units(),
    }


def accounting_meta(config: Config) -> dict[str, object]:
    """What the platform needs to read the intervals stream: which meter is accounted as what."""
    settings = config.accounting
    return {
        "interval_min": settings.interval_min,
        "timezone": config.timezone,
        "grid_factor": settings.grid_factor,
        "meters": [
            {
                "device": m.device,
                "quantity": m.quantity,
                "role": m.role,
                "carrier": m.carrier,
                "scope": m.scope,
                "unit": m.carrier_unit if m.carrier else "products",
                "conversion": float(m.conversion),
            }
            for m in settings.meters
        ],
    }


def pulse_totals(batch: list[Snapshot]) -> dict[str, int]:
    """The highest total each pulse input reached in a batch: saved with the batch's records."""
    totals: dict[str, int] = {}
    for s in batch:
        if isinstance(s, PulseReading) and s.total is not None:
            key = state_key(s.device)
            totals[key] = max(totals.get(key, s.total), s.total)
    return totals


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.signer, created = load_or_create(config.signing_key)
        if created:
            log.info("created signing key %s (key id %s)", config.signing_key, self.signer.kid)
        self.buffer = open_buffer(config)
        self.snapshots: queue.SimpleQueue[Snapshot] = queue.SimpleQueue()
        by_bus: dict[str, list[AnyDevice]] = defaultdict(list)
        for device in config.devices:
            by_bus[device.bus].append(device)
        self.pollers = [
            BusPoller(config.bus(b), devices, self.snapshots) for b, devices in by_bus.items()
        ]
        self.pulse_pollers = [
            PulsePoller(p, self.snapshots, self.buffer.state_int(state_key(p.id)))
            for p in config.pulse_inputs
        ]
        self.clock = ClockWatch(assume_synced=config.clock == "trusted")
        self.accounting = (
            Accounting(config.accounting, config.timezone, self.buffer.db, self.clock)
            if config.accounting.enabled
            else None
        )
        self.uplink = Uplink(config, self.meta, self.health) if config.mqtt.enabled else None
        self.influx = InfluxSink(config.influxdb, self.buffer) if config.influxdb.enabled else None
        self.stop_requested = threading.Event()
        self.started_ms = now_ms()
        self.committed_records = 0
        self._pending_since: float | None = (
            time.monotonic() if self.buffer.pending_records else None
        )
        self._next_prune = time.monotonic()
        self._next_status_file = 0.0
        self._next_make_room = self._next_disk_full_log = 0.0
        self._uncommitted: list[Snapshot] = []
        self._last_commit = 0.0
        self._next_status_publish = time.monotonic() + config.mqtt.status_interval_s
        self._unwritten = WriteQueue(MAX_UNWRITTEN_RECORDS)
        self._buffer_retry_at = self._next_busy_log = 0.0
        self.liveness = Liveness(time.monotonic())
        for poller in self.pollers:
            self.liveness.watch(
                f"bus {poller.bus.id}", poller, longest_poll_s(poller.bus, poller.devices)
            )
        for pulse_poller in self.pulse_pollers:
            self.liveness.watch(f"pulse input {pulse_poller.input.id}", pulse_poller)
        self.watchdog = Watchdog(self.liveness)
        self.restart_requested = False
        self.scans = BusScans(self.pollers)
        self.live = LiveState(config) if config.web.enabled else None
        self.web = self._web_server() if self.live else None
        self.command_host = CommandHost(self) if self.uplink and config.commands.enabled else None

    # -- what the platform and `cgw status` see ----------------------------------------

    def meta(self) -> dict[str, object]:
        return {
            "contract": "cgw/v1",
            "gateway": self.config.gateway_id,
            "site": self.config.site,
            "timezone": self.config.timezone,
            "clock": self.config.clock,
            "software": f"cgw {__version__}",
            "key": {
                "alg": "Ed25519",
                "kid": self.signer.kid,
                "public_key": public_key_text(self.signer.public),
                "fingerprint": fingerprint(self.signer.public),
            },
            "envelope_max_records": self.config.buffer.envelope_max_records,
            "devices": [device_meta(d) for d in self.config.devices]
            + [pulse_input_meta(p) for p in self.config.pulse_inputs],
            "accounting": accounting_meta(self.config),
        }

    def device_health(self) -> dict[str, dict[str, object]]:
        health = {device_id: h.as_dict() for p in self.pollers for device_id, h in p.health.items()}
        health.update((p.input.id, p.health.as_dict()) for p in self.pulse_pollers)
        return health

    def health(self) -> dict[str, object]:
        """The status topic's health: what a fleet operator watches (docs/CONTRACT.md)."""
        stats = self.buffer.stats()
        now = now_ms()
        devices = self.device_health()
        oldest = stats.oldest_undelivered_ms
        return {
            "software": f"cgw {__version__}",
            "uptime_s": (now - self.started_ms) // 1000,
            "last_seq": stats.last_seq,
            "backlog_envelopes": stats.backlog_envelopes,
            "backlog_records": stats.backlog_records,
            "oldest_undelivered_ms": oldest,
            "oldest_undelivered_age_s": None if oldest is None else max(0, now - oldest) // 1000,
            "dropped_records": stats.dropped_records,
            "dropped_envelopes": stats.dropped_envelopes,
            "disk": {
                "used_bytes": stats.used_bytes,
                "quota_bytes": stats.quota_bytes,
                "used_share": round(stats.used_bytes / stats.quota_bytes, 6),
            },
            "buses": bus_error_rates(
                {p.bus.id: [d.id for d in p.devices] for p in self.pollers}, devices
            ),
            "cpu_temperature_c": cpu_temperature_c(),
            "clock_synced": self.clock.synced,
            "devices": {
                device_id: {k: h[k] for k in ("last_quality", "last_ok_ms", "consecutive_failures")}
                for device_id, h in devices.items()
            },
            "accounting": self.accounting.status() if self.accounting else None,
        }

    def write_status_file(self, running: bool = True) -> None:
        state = self.uplink.state if self.uplink else None
        status = {
            "pid": os.getpid(),
            "running": running,
            "ts": now_ms(),
            "started_ms": self.started_ms,
            "committed_records": self.committed_records,
            "uplink": None
            if state is None
            else {
                "broker": f"{self.config.mqtt.host}:{self.config.mqtt.port}",
                "connected": state.connected,
                "last_error": state.last_error,
                "last_publish_ms": state.last_publish_ms,
                "inflight": self.uplink.inflight if self.uplink else 0,
                "rejected": state.rejected,
            },
            "devices": self.device_health(),
            "buses": {p.bus.id: p.bus_health.as_dict() for p in self.pollers},
            "accounting": self.accounting.status() if self.accounting else None,
            "influxdb": self.influx.status(self.buffer) if self.influx else None,
            "commands": self.command_host.status() if self.command_host else None,
        }
        if self.live:
            self.live.publish({**self.health(), **status})
        directory = self.config.runtime_dir
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "status.json.tmp"
        tmp.write_text(json.dumps(status, indent=1), encoding="utf-8")
        os.replace(tmp, directory / "status.json")

    # -- the loop ------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current cycle", signal.Signals(signum).name)
        self.stop_requested.set()

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        for poller in self.pollers:
            poller.start()
        for pulse_poller in self.pulse_pollers:
            pulse_poller.start()
        if self.influx:
            self.influx.start()
        if self.uplink:
            self.uplink.start()
        else:
            log.warning("MQTT uplink disabled: readings are buffered only")
        if self.web:
            self.web.start()
        log.info(
            "running: gateway %s, %d devices on %d buses, %d pulse inputs, key id %s",
            self.config.gateway_id,
            len(self.config.devices),
            len(self.pollers),
            len(self.pulse_pollers),
            self.signer.kid,
        )
        try:
            while not self.stop_requested.is_set():
                self.step()
                self.watchdog.tick(time.monotonic(), self.all_buses_polled, self._summary)
        finally:
            self.shutdown()
        return 0

    def step(self) -> None:
        self._uncommitted.extend(
            self._collect(DRAIN_STEP_S if self.uplink and self.uplink.inflight else STEP_S)
        )
        now = time.monotonic()
        if now >= self._buffer_retry_at:
            self._buffer_step(now)
        self.scans.finish()
        if self.web:
            self.web.run_actions()
        if self.command_host:
            self.command_host.step(now)
        if now >= self._next_status_file:
            self._next_status_file = now + STATUS_FILE_EVERY_S
            try:
                self.write_status_file()
            except OSError as exc:
                log.warning("cannot write %s/status.json: %s", self.config.runtime_dir, exc)

    def _web_server(self) -> WebServer:
        assert self.live is not None
        try:
            return WebServer(self.config.web, self.live, self.scans)
        except OSError as exc:
            host, port = self.config.web.listen
            raise ConfigError(
                str(self.config.path),
                "web.listen",
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            ) from None

    def restart(self) -> None:
        """Stop cleanly, then start again (`cgw run` executes itself anew): a new configuration."""
        self.restart_requested = True
        self.stop_requested.set()

    def all_buses_polled(self) -> bool:
        """Every bus has been polled once, answered or not (READY=1 for systemd)."""
        return all(any(h.polls for h in p.health.values()) for p in self.pollers)

    def _summary(self) -> str:
        """One line for `systemctl status`."""
        uplink = "no uplink"
        if self.uplink:
            uplink = "uplink " + ("connected" if self.uplink.state.connected else "offline")
        return (
            f"{len(self.config.devices)} devices on {len(self.pollers)} buses, "
            f"{len(self.pulse_pollers)} pulse inputs; "
            f"{self.committed_records} readings committed; {uplink}"
        )

    def _buffer_step(self, now: float) -> None:
        """The buffer work, surviving a full disk (handled) and a database that another process
        keeps locked (retried; readings wait in memory, and no keep-alive goes to systemd)."""
        try:
            try:
                self._buffer_work(now)
            except sqlite3.OperationalError as exc:
                if not is_disk_full(exc):
                    raise
                self._disk_full()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            self._database_busy(exc)
        else:
            self.liveness.buffer_progressed(time.monotonic())

    def _database_busy(self, exc: sqlite3.OperationalError) -> None:
        now = time.monotonic()
        self._buffer_retry_at = now + BUSY_RETRY_S
        self.liveness.buffer_failed(f"cannot write {self.buffer.path.name}: {exc}")
        if now >= self._next_busy_log:
            self._next_busy_log = now + 60.0
            log.error(
                "cannot write %s: %s (another process holds it?); %d readings wait in memory",
                self.buffer.path,
                exc,
                self._unwritten.records + len(self._uncommitted),
            )

    def _buffer_work(self, now: float) -> None:
        # One transaction (one fsync) per commit interval: the readings of a poll cycle together,
        # not one SD-card write per device.
        if (self._uncommitted or self._unwritten) and (
            now - self._last_commit >= self.config.buffer.commit_interval_s
        ):
            self._last_commit = now
            self._commit()
        if self.accounting and self.accounting.checkpoint_due(now, now_ms()):
            self._checkpoint()
        if self._pending_since is not None and (
            now - self._pending_since >= self.config.buffer.seal_interval_s
            or self.buffer.pending_records >= self.config.buffer.envelope_max_records
        ):
            self._seal()
        if self.influx:
            self.influx.pump(self.buffer)
        if self.uplink:
            self.uplink.pump(self.buffer)
            if now >= self._next_status_publish:
                self._next_status_publish = now + self.config.mqtt.status_interval_s
                self.uplink.publish_status()
        if now >= self._next_prune:
            self._next_prune = now + self.config.buffer.prune_interval_s
            self.buffer.prune(now_ms(), int(self.config.buffer.delivered_retention_h * 3_600_000))

    def _collect(self, wait_s: float) -> list[Snapshot]:
        try:
            batch = [self.snapshots.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(self.snapshots.get_nowait())
            except queue.Empty:
                break
        if self.live:
            for snapshot in batch:
                self.live.observe(snapshot)
        return batch

    def _commit(self) -> None:
        batch, self._uncommitted = self._uncommitted, []
        if batch:
            self._stage(batch)
        while self._unwritten:  # a busy database raises here; what is left waits
            write = self._unwritten.first()
            readings = write.stream == READINGS
            stored = self.buffer.commit(
                write.stream,
                write.records,
                write.totals,
                seal_with=(self.signer, now_ms()) if readings else None,
            )
            self._unwritten.done()
            if not readings:
                continue
            if stored:
                self.committed_records += len(write.records)
                if self._pending_since is None and self.buffer.pending_records:
                    self._pending_since = time.monotonic()
            else:
                self._disk_full()

    def _stage(self, batch: list[Snapshot]) -> None:
        """Stamp and account a batch (once, however often its commit must be retried) and queue
        its writes. Beyond MAX_UNWRITTEN_RECORDS the oldest are dropped and counted."""
        if self.accounting:
            self.accounting.observe(batch)  # publishes a clock step with the alarms
        elif (correction := stamp(self.clock, batch)) is not None:
            self._queue(Write(ALARMS, [canonical(correction_event(correction))]))
        self._queue(Write(READINGS, [canonical(s.record()) for s in batch], pulse_totals(batch)))

    def _queue(self, write: Write) -> None:
        if dropped := self._unwritten.put(write):
            self.buffer.count_lost(dropped)

    def _checkpoint(self) -> None:
        """Save the ledger; results of closed or revised intervals and alarms go in with it."""
        accounting = self.accounting
        assert accounting is not None
        if not self.buffer.commit_with(lambda db: accounting.checkpoint(db, now_ms())):
            self._disk_full()
        elif self._pending_since is None and self.buffer.pending_records:
            self._pending_since = time.monotonic()

    def _disk_full(self) -> None:
        """Polling goes on: what cannot be stored is counted, and the oldest undelivered data
        makes room (at most once a second; logged at most once a minute)."""
        now = time.monotonic()
        if now < self._next_make_room:
            return
        self._next_make_room = now + 1.0
        if now >= self._next_disk_full_log:
            self._next_disk_full_log = now + 60.0
            log.error(
                "disk full: %d readings dropped so far; dropping the oldest undelivered data to make room",
                self.buffer.stats().dropped_records,
            )
        try:
            self.buffer.make_room()
        except sqlite3.OperationalError as exc:
            if not is_disk_full(exc):
                raise

    def _seal(self) -> None:
        self.buffer.seal_pending(self.signer, now_ms())
        self._pending_since = None

    def shutdown(self) -> None:
        self.watchdog.stopping()
        if self.web:
            self.web.stop()
        for poller in self.pollers:
            poller.stop()
        for pulse_poller in self.pulse_pollers:
            pulse_poller.stop()  # each hands over a last record with what it counted since
        for poller in self.pollers:
            poller.join(timeout=poller.bus.timeout_s * 4 + 1)
        for pulse_poller in self.pulse_pollers:
            pulse_poller.join(timeout=2)
        self._uncommitted.extend(self._collect(0))
        try:
            self._commit()
            if self.accounting:
                self._checkpoint()
            if self.buffer.pending_records:
                self._seal()
            if self.uplink:
                deadline = time.monotonic() + 3
                self.uplink.pump(self.buffer)
                while (
                    self.uplink.state.connected
                    and self.uplink.inflight
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
                    self.uplink.pump(self.buffer)
                self.uplink.stop()
            if self.influx:
                self.influx.flush(self.buffer, 3.0)
                self.influx.stop(self.buffer)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            log.error(
                "cannot write %s at shutdown: %s; %d readings are lost",
                self.buffer.path,
                exc,
                self._unwritten.records,
            )
        self.write_status_file(running=False)
        self.buffer.close()
        log.info("stopped")
