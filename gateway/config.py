"""Load and validate the gateway's TOML configuration.

Every mistake is reported as `file: key.path: what is wrong`, so an electrician or IT can fix it
without reading code. The loader returns frozen dataclasses; nothing else reads the TOML.
"""

from __future__ import annotations

import stat
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.dlt645.frame import normalise_address
from drivers.dlt645.identifiers import DEFAULT_IDENTIFIERS, Dlt645Device
from drivers.dlt645.identifiers import identifiers as dlt645_identifiers
from drivers.profile import Profile, ProfileError, load_shipped_profile, profile_from_mapping
from drivers.vocabulary import vocabulary
from gateway.accounting.settings import AccountingConfig, Source, parse_accounting
from gateway.tomltable import MISSING, ConfigError, Table, array

DEFAULT_PATH = Path("/etc/cgw/gateway.toml")


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    protocol: str = "5"
    client_id: str = ""
    topic_prefix: str = "cgw/v1"
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    inflight: int = 32
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    status_interval_s: float = 60.0
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class InfluxConfig:
    """The optional InfluxDB 2.x sink (docs/INFLUXDB.md), alongside MQTT with its own cursor."""

    enabled: bool = False
    url: str = ""
    org: str = ""
    bucket: str = ""
    token: str | None = None
    batch_records: int = 1000
    flush_interval_s: float = 5.0
    timeout_s: float = 10.0
    retry_min_s: float = 1.0
    retry_max_s: float = 60.0
    verify_tls: bool = True
    ca_file: Path | None = None


@dataclass(frozen=True)
class CommandsConfig:
    """Signed downlink commands (docs/COMMANDS.md): off until a platform key is pinned."""

    platform_keys: tuple[str, ...] = ()  # base64 of the raw 32-byte Ed25519 public keys
    probation_s: float = 120.0  # a config applied by command must prove healthy within this

    @property
    def enabled(self) -> bool:
        return bool(self.platform_keys)


@dataclass(frozen=True)
class WebConfig:
    """The commissioning page (docs/COMMISSIONING.md): off unless enabled."""

    enabled: bool = False
    listen: tuple[str, int] = ("0.0.0.0", 8080)
    password_hash: str = ""  # the scrypt line of `cgw web-password`, read from password_file
    public_view: bool = False  # viewing without the password (actions always need it)
    session_idle_min: float = 30.0


@dataclass(frozen=True)
class BufferConfig:
    commit_interval_s: float = 1.0
    seal_interval_s: float = 5.0
    envelope_max_records: int = 500
    quota_mb: float = 1024.0
    delivered_retention_h: float = 168.0
    prune_interval_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
class BusScheduling:
    """How a bus treats a device that keeps failing: after `backoff_after` failed polls in a row
    it is polled at doubling intervals, at most `backoff_max_s` apart, until it answers again."""

    backoff_after: int = 3
    backoff_max_s: float = 300.0


@dataclass(frozen=True)
class SerialBus(BusScheduling):
    id: str
    port: str
    baudrate: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1
    timeout_s: float = 0.5
    rs485: bool = False  # kernel RS-485 mode: the UART drives RTS for the transceiver direction
    rs485_delay_before_tx_s: float = 0.0
    rs485_delay_before_rx_s: float = 0.0

    @property
    def character_bits(self) -> int:
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def character_s(self) -> float:
        return self.character_bits / self.baudrate

    @property
    def silent_interval_s(self) -> float:
        """Modbus t3.5: 3.5 character times, fixed at 1.75 ms above 19200 baud (FACTS.md 6)."""
        return 3.5 * self.character_s if self.baudrate <= 19200 else 0.00175

    def read_wire_s(self, registers: int) -> float:
        """The least bus time of one FC03/FC04 read of `registers` (FACTS.md 6): the 8-byte
        request and the (5 + 2n)-byte answer, each followed by t3.5 of silence."""
        return (8 + 5 + 2 * registers) * self.character_s + 2 * self.silent_interval_s


@dataclass(frozen=True)
class TcpBus(BusScheduling):
    id: str
    host: str
    port: int = 502
    timeout_s: float = 1.0


Bus = SerialBus | TcpBus


@dataclass(frozen=True)
class Device:
    """A Modbus device: a unit on a bus, read through a profile's register map."""

    id: str
    bus: str
    unit: int
    profile: Profile
    interval_s: float = 5.0
    quantities: tuple[str, ...] | None = None

    def quantity_units(self) -> dict[str, str]:
        words = vocabulary()
        return {r.quantity: words[r.quantity].unit for r in self.profile.select(self.quantities)}


AnyDevice = Device | Dlt645Device

PULSE_EDGES = ("falling", "rising")
PULSE_BIASES = ("pull_up", "pull_down", "disabled")


@dataclass(frozen=True)
class PulseInput:
    """A meter's S0 / open-collector pulse output wired to a GPIO line (or emulated)."""

    id: str
    quantity: str
    pulses_per_unit: float
    source: str = "gpio"  # or "emulated"
    chip: str = "/dev/gpiochip0"
    line: int = 0
    edge: str = "falling"
    bias: str = "pull_up"
    debounce_s: float = 0.02
    max_rate_hz: float = 20.0
    interval_s: float = 5.0
    emulated_rate_hz: float = 1.0

    def quantity_units(self) -> dict[str, str]:
        return {self.quantity: vocabulary()[self.quantity].unit}


@dataclass(frozen=True)
class Config:
    path: Path
    gateway_id: str
    site: str
    timezone: str
    data_dir: Path
    runtime_dir: Path
    signing_key: Path
    clock: str
    mqtt: MqttConfig
    buffer: BufferConfig
    buses: tuple[Bus, ...]
    devices: tuple[AnyDevice, ...]
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    pulse_inputs: tuple[PulseInput, ...] = ()
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    influxdb: InfluxConfig = field(default_factory=InfluxConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    web: WebConfig = field(default_factory=WebConfig)

    @property
    def topic_base(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.site}/{self.gateway_id}"

    def bus(self, bus_id: str) -> Bus:
        return next(b for b in self.buses if b.id == bus_id)


def _path(table: Table, name: str, default: Any = MISSING, base: Path | None = None) -> Path:
    value = table.get(name, str, default)
    path = Path(value)
    return path if path.is_absolute() or base is None else base / path


def _mqtt(table: Table, gateway_id: str, base: Path) -> MqttConfig:
    tls = None
    if "tls" in table.data:
        t = table.table("tls")
        tls = TlsConfig(
            ca_file=_path(t, "ca_file", None, base) if "ca_file" in t.data else None,
            cert_file=_path(t, "cert_file", None, base) if "cert_file" in t.data else None,
            key_file=_path(t, "key_file", None, base) if "key_file" in t.data else None,
        )
        t.get("ca_file", str, None), t.get("cert_file", str, None), t.get("key_file", str, None)
        if (tls.cert_file is None) != (tls.key_file is None):
            raise t.error("key_file", "cert_file and key_file go together (mutual TLS)")
        t.done()
    password = table.get("password", str, None)
    if "password_file" in table.data:
        if password is not None:
            raise table.error("password_file", "give either password or password_file, not both")
        password_file = _path(table, "password_file", base=base)
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise table.error(
                "password_file", f"cannot read {password_file}: {exc.strerror}"
            ) from exc
    prefix = table.get("topic_prefix", str, "cgw/v1")
    if (
        not prefix
        or any(c in prefix for c in "+#")
        or prefix.startswith("/")
        or prefix.endswith("/")
    ):
        raise table.error(
            "topic_prefix", f"{prefix!r} must be a topic path without wildcards or edge '/'"
        )
    mqtt = MqttConfig(
        enabled=table.get("enabled", bool, True),
        host=table.get("host", str, "localhost"),
        port=table.integer("port", 8883 if tls else 1883, 1, 65535),
        protocol=table.choice("protocol", ("5", "3.1.1"), "5"),
        client_id=table.get("client_id", str, f"cgw-{gateway_id}"),
        topic_prefix=prefix,
        username=table.get("username", str, None),
        password=password,
        keepalive_s=table.integer("keepalive_s", 30, 5, 3600),
        inflight=table.integer("inflight", 32, 1, 1000),
        reconnect_min_s=table.number("reconnect_min_s", 1.0, 0.1, 3600),
        reconnect_max_s=table.number("reconnect_max_s", 60.0, 0.1, 3600),
        status_interval_s=table.number("status_interval_s", 60.0, 1, 86400),
        tls=tls,
    )
    if mqtt.reconnect_max_s < mqtt.reconnect_min_s:
        raise table.error("reconnect_max_s", "must not be less than reconnect_min_s")
    table.done()
    return mqtt


def _secret_file(table: Table, name: str, base: Path) -> str:
    """A secret kept in a file that only its owner may read (mode 0600 or stricter)."""
    path = _path(table, name, base=base)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise table.error(name, f"cannot read {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise table.error(
            name,
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`",
        )
    return text


def _influxdb(table: Table, base: Path) -> InfluxConfig:
    enabled = table.get("enabled", bool, "url" in table.data)
    if set(table.data) <= {"enabled"}:
        if enabled:
            raise table.error("url", "is required")
        return InfluxConfig()
    url = table.get("url", str)
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise table.error("url", f"{url!r} must be an http:// or https:// URL")
    token = table.get("token", str, None)
    if "token_file" in table.data:
        if token is not None:
            raise table.error("token_file", "give either token or token_file, not both")
        token = _secret_file(table, "token_file", base)
    tls = table.table("tls")
    ca_file = _path(tls, "ca_file", None, base) if "ca_file" in tls.data else None
    tls.get("ca_file", str, None)
    verify = tls.get("verify", bool, True)
    if ca_file is not None and not verify:
        raise tls.error("verify", "a ca_file is only used with verify = true")
    if tls.data and not url.startswith("https://"):
        raise tls.error(next(iter(tls.data)), "TLS settings need an https:// url")
    tls.done()
    influx = InfluxConfig(
        enabled=enabled,
        url=url,
        org=table.get("org", str),
        bucket=table.get("bucket", str),
        token=token,
        batch_records=table.integer("batch_records", 1000, 1, 1_000_000),
        flush_interval_s=table.number("flush_interval_s", 5.0, 0.05, 3600),
        timeout_s=table.number("timeout_s", 10.0, 0.5, 300),
        retry_min_s=table.number("retry_min_s", 1.0, 0.1, 3600),
        retry_max_s=table.number("retry_max_s", 60.0, 0.1, 3600),
        verify_tls=verify,
        ca_file=ca_file,
    )
    if influx.retry_max_s < influx.retry_min_s:
        raise table.error("retry_max_s", "must not be less than retry_min_s")
    for name in ("org", "bucket"):
        if not getattr(influx, name):
            raise table.error(name, "must not be empty")
    table.done()
    return influx


def _commands(table: Table, base: Path) -> CommandsConfig:
    from buffer.keys import load_public_key

    keys: list[tuple[str, str]] = []  # (key path for errors, text)
    listed = table.get("platform_keys", list, [])
    keys.extend((f"platform_keys[{i}]", k) for i, k in enumerate(listed))
    if "platform_key_file" in table.data:
        path = _path(table, "platform_key_file", base=base)
        try:
            lines = path.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise table.error("platform_key_file", f"cannot read {path}: {exc}") from None
        keys.extend(("platform_key_file", line) for line in lines if line.strip())
    for name, text in keys:
        try:
            load_public_key(text if isinstance(text, str) else "")
        except ValueError:
            raise table.error(
                name, "not an Ed25519 public key (base64 of its 32 raw bytes, one key a line)"
            ) from None
    commands = CommandsConfig(
        platform_keys=tuple(k.strip() for _, k in keys),
        probation_s=table.number("probation_s", 120.0, 10.0, 3600.0),
    )
    table.done()
    return commands


def _web(table: Table, base: Path) -> WebConfig:
    from gateway.web.auth import PasswordFileError, check_hash_line

    enabled = table.get("enabled", bool, bool(table.data))
    if not enabled:
        table.read.update(table.data)
        return WebConfig()
    listen = table.get("listen", str, "0.0.0.0:8080")
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise table.error("listen", f"{listen!r} must be ADDRESS:PORT, e.g. 0.0.0.0:8080")
    password_hash = _secret_file(table, "password_file", base)
    try:
        check_hash_line(password_hash)
    except PasswordFileError as exc:
        raise table.error("password_file", str(exc)) from None
    web = WebConfig(
        enabled=True,
        listen=(host.strip("[]"), int(port_text)),
        password_hash=password_hash,
        public_view=table.get("public_view", bool, False),
        session_idle_min=table.number("session_idle_min", 30.0, 1.0, 24 * 60.0),
    )
    table.done()
    return web


def _buffer(table: Table) -> BufferConfig:
    buffer = BufferConfig(
        commit_interval_s=table.number("commit_interval_s", 1.0, 0.05, 60),
        seal_interval_s=table.number("seal_interval_s", 5.0, 0.05, 60),
        envelope_max_records=table.integer("envelope_max_records", 500, 1, 100_000),
        quota_mb=table.number("quota_mb", 1024.0, 0.1, 1_000_000),
        delivered_retention_h=table.number("delivered_retention_h", 168.0, 0, 24 * 366 * 5),
        prune_interval_s=table.number("prune_interval_s", 60.0, 1, 86400),
    )
    table.done()
    return buffer


def _bus(table: Table) -> Bus:
    bus_id = table.identifier("id")
    kind = table.choice("type", ("rtu", "tcp"))
    backoff_after = table.integer("backoff_after", 3, 1, 1000)
    backoff_max_s = table.number("backoff_max_s", 300.0, 1, 86400)
    bus: Bus
    if kind == "rtu":
        bus = SerialBus(
            id=bus_id,
            port=table.get("port", str),
            baudrate=table.choice(
                "baudrate", (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200), 9600
            ),
            parity=table.choice("parity", ("N", "E", "O"), "N"),
            bytesize=table.choice("bytesize", (7, 8), 8),
            stopbits=table.choice("stopbits", (1, 2), 1),
            timeout_s=table.number("timeout_s", 0.5, 0.02, 30),
            rs485=table.get("rs485", bool, False),
            rs485_delay_before_tx_s=table.number("rs485_delay_before_tx_s", 0.0, 0, 1),
            rs485_delay_before_rx_s=table.number("rs485_delay_before_rx_s", 0.0, 0, 1),
            backoff_after=backoff_after,
            backoff_max_s=backoff_max_s,
        )
    else:
        bus = TcpBus(
            id=bus_id,
            host=table.get("host", str),
            port=table.integer("port", 502, 1, 65535),
            timeout_s=table.number("timeout_s", 1.0, 0.02, 30),
            backoff_after=backoff_after,
            backoff_max_s=backoff_max_s,
        )
    table.done()
    return bus


def _dlt645_device(table: Table, device_id: str, bus_id: str, bus: Bus) -> Dlt645Device:
    if not isinstance(bus, SerialBus):
        raise table.error("protocol", 'DL/T 645 meters sit on a serial bus (type = "rtu")')
    address = table.get("address", str)
    wanted = table.get("identifiers", list, None)
    try:
        normalise_address(address)
    except ValueError as exc:
        raise table.error("address", str(exc)) from None
    known = dlt645_identifiers()
    for i, di in enumerate(wanted or []):
        if not isinstance(di, str) or di.upper() not in known:
            raise table.error(
                f"identifiers[{i}]", f"no DL/T 645 identifier {di!r} (see docs/FIELD.md)"
            )
    device = Dlt645Device(
        id=device_id,
        address=address,
        identifiers=tuple(wanted) if wanted else DEFAULT_IDENTIFIERS,
        interval_s=table.number("interval_s", 5.0, 0.1, 86400),
        bus=bus_id,
    )
    table.done()
    return device


def _device(table: Table, buses: Mapping[str, Bus], profiles: Mapping[str, Profile]) -> AnyDevice:
    device_id = table.identifier("id")
    bus_id = table.get("bus", str)
    if bus_id not in buses:
        known = ", ".join(sorted(buses)) or "none defined"
        raise table.error("bus", f"no bus {bus_id!r} (buses: {known})")
    if table.choice("protocol", ("modbus", "dlt645"), "modbus") == "dlt645":
        return _dlt645_device(table, device_id, bus_id, buses[bus_id])
    high = 247 if isinstance(buses[bus_id], SerialBus) else 255
    unit = table.integer("unit", MISSING, 0 if high == 255 else 1, high)
    profile_name = table.get("profile", str)
    profile = profiles.get(profile_name)
    if profile is None:
        try:
            profile = load_shipped_profile(profile_name)
        except KeyError:
            raise table.error(
                "profile",
                f"no profile {profile_name!r}: neither shipped (`cgw profiles` lists them) "
                "nor defined under [profiles] in this file",
            ) from None
    quantities = table.get("quantities", list, None)
    if quantities is not None:
        offered = {r.quantity for r in profile.registers}
        for i, q in enumerate(quantities):
            if q not in offered:
                raise table.error(f"quantities[{i}]", f"profile {profile_name!r} has no {q!r}")
        quantities = tuple(quantities)
    device = Device(
        id=device_id,
        bus=bus_id,
        unit=unit,
        profile=profile,
        interval_s=table.number("interval_s", 5.0, 0.1, 86400),
        quantities=quantities,
    )
    table.done()
    return device


def _pulse_input(table: Table) -> PulseInput:
    input_id = table.identifier("id")
    source = table.choice("source", ("gpio", "emulated"), "gpio")
    quantity = table.get("quantity", str)
    definition = vocabulary().get(quantity)
    if definition is None or definition.kind != "counter":
        raise table.error(
            "quantity",
            f"{quantity!r} is not a counter quantity of the vocabulary "
            "(e.g. active_energy_import_kwh, water_volume_m3, gas_volume_nm3)",
        )
    pulses_per_unit = table.get("pulses_per_unit", float)
    if not 0 < pulses_per_unit <= 1e9:
        raise table.error(
            "pulses_per_unit", f"must be > 0 (and at most 1e9), not {pulses_per_unit:g}"
        )
    if source == "gpio" and "emulated_rate_hz" in table.data:
        raise table.error("emulated_rate_hz", 'only for source = "emulated"')
    pulse_input = PulseInput(
        id=input_id,
        quantity=quantity,
        pulses_per_unit=pulses_per_unit,
        source=source,
        chip=table.get("chip", str, "/dev/gpiochip0"),
        line=table.integer("line", MISSING if source == "gpio" else 0, 0, 1023),
        edge=table.choice("edge", PULSE_EDGES, "falling"),
        bias=table.choice("bias", PULSE_BIASES, "pull_up"),
        debounce_s=table.number("debounce_ms", 20.0, 0, 1000) / 1000,
        max_rate_hz=table.number("max_rate_hz", 20.0, 0.01, 10_000),
        interval_s=table.number("interval_s", 5.0, 0.1, 86400),
        emulated_rate_hz=table.number("emulated_rate_hz", 1.0, 0, 10_000),
    )
    table.done()
    return pulse_input


def _unique(tables: list[Table], items: list[Any], what: str) -> None:
    seen: set[str] = set()
    for table, item in zip(tables, items, strict=True):
        if item.id in seen:
            raise table.error("id", f"duplicate {what} id {item.id!r}")
        seen.add(item.id)


def _one_bus_per_line(tables: list[Table], buses: list[Bus]) -> None:
    """Two buses on one serial port would poll it from two threads at once: frames would collide."""
    owners: dict[str, str] = {}
    for table, bus in zip(tables, buses, strict=True):
        if not isinstance(bus, SerialBus):
            continue
        if bus.port in owners:
            raise table.error(
                "port",
                f"{bus.port} is already the port of bus {owners[bus.port]!r}: one line is one bus "
                "(Modbus and DL/T 645 devices may share it at the same settings)",
            )
        owners[bus.port] = bus.id


def _sources(devices: list[AnyDevice], pulse_inputs: list[PulseInput]) -> dict[str, Source]:
    sources = {d.id: Source(tuple(d.quantity_units()), d.interval_s) for d in devices}
    for p in pulse_inputs:
        sources[p.id] = Source((p.quantity,), p.interval_s, p.pulses_per_unit)
    return sources


def parse(data: Mapping[str, Any], path: str | Path) -> Config:
    """Validate parsed TOML. Relative paths are taken from the config file's folder."""
    path = Path(path)
    base = path.parent.resolve()
    root = Table(str(path), "", data)
    gw = root.table("gateway")
    gateway_id = gw.identifier("id")
    site = gw.identifier("site")
    timezone = gw.get("timezone", str, "UTC")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise gw.error(
            "timezone", f"unknown time zone {timezone!r} (e.g. 'Asia/Shanghai')"
        ) from None
    data_dir = _path(gw, "data_dir", "/var/lib/cgw", base)
    runtime_dir = _path(gw, "runtime_dir", "/run/cgw", base)
    # "ntp": timestamps are trusted once the kernel says synchronised; "trusted": from boot (an
    # RTC, or a site without NTP whose clock is set by hand).
    clock = gw.choice("clock", ("ntp", "trusted"), "ntp")
    signing_key = _path(gw, "signing_key", str(data_dir / "signing.key"), base)
    gw.done()

    profiles: dict[str, Profile] = {}
    inline = root.table("profiles")
    for name in inline.data:
        inline.read.add(name)
        try:
            profiles[name] = profile_from_mapping(name, inline.data[name], str(path))
        except ProfileError as exc:
            raise ConfigError(str(path), f"profiles.{name}.{exc.key}", exc.message) from None

    bus_tables = array(root, "buses")
    buses = [_bus(t) for t in bus_tables]
    _unique(bus_tables, buses, "bus")
    _one_bus_per_line(bus_tables, buses)
    by_id = {b.id: b for b in buses}
    device_tables = array(root, "devices")
    devices = [_device(t, by_id, profiles) for t in device_tables]
    _unique(device_tables, devices, "device")
    pulse_tables = array(root, "pulse_inputs")
    pulse_inputs = [_pulse_input(t) for t in pulse_tables]
    _unique(pulse_tables, pulse_inputs, "pulse input")
    device_ids = {d.id for d in devices}
    for table, pulse_input in zip(pulse_tables, pulse_inputs, strict=True):
        if pulse_input.id in device_ids:
            raise table.error("id", f"{pulse_input.id!r} is already a device id")

    config = Config(
        path=path,
        gateway_id=gateway_id,
        site=site,
        timezone=timezone,
        data_dir=data_dir,
        runtime_dir=runtime_dir,
        signing_key=signing_key,
        clock=clock,
        mqtt=_mqtt(root.table("mqtt"), gateway_id, base),
        buffer=_buffer(root.table("buffer")),
        buses=tuple(buses),
        devices=tuple(devices),
        profiles=profiles,
        pulse_inputs=tuple(pulse_inputs),
        accounting=parse_accounting(root, _sources(devices, pulse_inputs)),
        influxdb=_influxdb(root.table("influxdb"), base),
        commands=_commands(root.table("commands"), base),
        web=_web(root.table("web"), base),
    )
    root.done()
    return config


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no such file (give another with --config)") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", "is not UTF-8 text") from None
    return loads(text, path)


def loads(text: str, path: str | Path) -> Config:
    """A configuration from TOML text, as if read from `path` (relative paths start there)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    return parse(data, path)
