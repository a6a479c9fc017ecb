"""The gateway's config, made from its inventory row and its site's template, and validated by
the gateway's own loader before anything is written.

A template is a gateway.toml without the gateway's identity and broker: [[buses]], [[devices]],
[[pulse_inputs]], [profiles], [accounting], [buffer], and optionally [gateway] timezone / clock and
[mqtt] settings other than the broker and credentials. The row adds id, site, time zone, broker,
TLS files and its bus settings.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, parse
from provisioning import layout, tomlwriter
from provisioning.errors import Exit, ProvisionError
from provisioning.inventory import Entry
from provisioning.udev import stable_port

TABLE_KINDS: dict[str, type] = {
    "gateway": dict,
    "mqtt": dict,
    "buffer": dict,
    "profiles": dict,
    "accounting": dict,
    "commands": dict,
    "web": dict,
    "buses": list,
    "devices": list,
    "pulse_inputs": list,
}
TEMPLATE_GATEWAY_KEYS = ("timezone", "clock")
INVENTORY_MQTT_KEYS = ("host", "port", "tls", "username", "password", "password_file")
DEFAULT_RS485_BUS = "rs485-1"


def _template_error(path: Path, message: str) -> ProvisionError:
    return ProvisionError(f"template {path}: {message}", Exit.INVENTORY)


def read_template(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _template_error(path, "no such file (the inventory's template column)") from None
    except OSError as exc:
        raise _template_error(path, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _template_error(path, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise _template_error(path, f"not valid TOML: {exc}") from None
    for name in data:
        if name not in TABLE_KINDS:
            raise _template_error(path, f"unknown table {name!r} (misspelt?)")
    for name, kind in TABLE_KINDS.items():
        if name in data and not (
            isinstance(data[name], dict)
            if kind is dict
            else isinstance(data[name], list) and all(isinstance(x, dict) for x in data[name])
        ):
            shape = f"[{name}]" if kind is dict else f"[[{name}]]"
            raise _template_error(path, f"{name} must be written as {shape}")
    for name in data.get("gateway", {}):
        if name not in TEMPLATE_GATEWAY_KEYS:
            raise _template_error(
                path, f"gateway.{name}: set by provisioning or the inventory; remove it"
            )
    for name in data.get("mqtt", {}):
        if name in INVENTORY_MQTT_KEYS:
            raise _template_error(
                path,
                f"mqtt.{name}: comes from the inventory (broker, mqtt_username); remove it",
            )
    return data


def _bus_settings(entry: Entry, buses: list[dict[str, Any]], template: str) -> None:
    """Apply the row's bus columns to the template's buses (in place)."""
    by_id = {str(b.get("id")): b for b in buses}
    if entry.rs485:
        serial = [b for b in buses if b.get("type") == "rtu"]
        if not serial:
            serial = [{"id": DEFAULT_RS485_BUS, "type": "rtu"}]
            buses.append(serial[0])
            by_id[DEFAULT_RS485_BUS] = serial[0]
        if len(serial) > 1:
            names = ", ".join(str(b.get("id")) for b in serial)
            raise ProvisionError(
                f"{entry.where}: rs485_port, baudrate, … set the template's one serial bus, but "
                f"{template} has {len(serial)} ({names}): use bus.<id>.port columns instead",
                Exit.INVENTORY,
            )
        serial[0].update(entry.rs485)
    for bus_id, settings in entry.buses.items():
        if bus_id not in by_id:
            known = ", ".join(by_id) or "none"
            raise ProvisionError(
                f"{entry.where}: bus.{bus_id}: {template} has no bus {bus_id!r} (buses: {known})",
                Exit.INVENTORY,
            )
        by_id[bus_id].update(settings)
    for bus in buses:
        if bus.get("type") == "rtu" and isinstance(bus.get("port"), str):
            try:
                bus["port"] = stable_port(bus["port"])
            except ValueError as exc:
                raise ProvisionError(
                    f"{entry.where}: bus {bus.get('id')}: {exc}", Exit.INVENTORY
                ) from None


def build(
    entry: Entry,
    template: dict[str, Any] | None,
    platform_key: bool = False,
    web_password: bool = False,
) -> dict[str, Any]:
    """The config as TOML data, in a fixed order."""
    base = copy.deepcopy(template or {})
    template_name = entry.template.name if entry.template else "no template"
    gateway: dict[str, Any] = {"id": entry.gateway_id, "site": entry.site}
    gateway["timezone"] = entry.timezone or base.get("gateway", {}).get("timezone", "UTC")
    gateway["data_dir"] = layout.DATA_DIR
    gateway["runtime_dir"] = layout.RUNTIME_DIR
    if "clock" in base.get("gateway", {}):
        gateway["clock"] = base["gateway"]["clock"]
    mqtt: dict[str, Any] = {"host": entry.broker.host, "port": entry.broker.port}
    if entry.mqtt_username:
        mqtt["username"] = entry.mqtt_username
        mqtt["password_file"] = layout.MQTT_PASSWORD
    mqtt.update(base.get("mqtt", {}))
    if entry.broker.tls:
        mqtt["tls"] = {
            "ca_file": layout.TLS_CA,
            "cert_file": layout.TLS_CERT,
            "key_file": layout.TLS_KEY,
        }
    buses = list(base.get("buses", []))
    _bus_settings(entry, buses, template_name)
    data: dict[str, Any] = {"gateway": gateway, "mqtt": mqtt}
    for name in ("buffer", "profiles"):
        if name in base:
            data[name] = base[name]
    if buses:
        data["buses"] = buses
    for name in ("devices", "pulse_inputs", "accounting"):
        if name in base:
            data[name] = base[name]
    if platform_key:
        data["commands"] = {**base.get("commands", {}), "platform_key_file": layout.PLATFORM_KEY}
    if web_password:
        data["web"] = {**base.get("web", {}), "password_file": layout.WEB_PASSWORD}
    return data


def render(entry: Entry, data: dict[str, Any]) -> str:
    template = entry.template.name if entry.template else "no template"
    header = (
        f"Written by `cgw provision` for gateway {entry.gateway_id} (serial {entry.serial})\n"
        f"from the inventory and the site template {template}. A re-run rewrites this file\n"
        "(keeping the old one as gateway.toml.previous): change the inventory or the template."
    )
    return tomlwriter.dumps(data, header)


def validate(
    text: str, config_path: Path, files: Mapping[tuple[str, str], Path | None] | None = None
) -> Config:
    """Validate with the gateway's own loader, as `cgw run` will read the file. `files`: where
    the files the config names ((table, key) -> path) are read now: under --root, or the ones
    about to be installed."""
    data = tomllib.loads(text)
    for (table, key), path in (files or {}).items():
        if path is not None and key in data.get(table, {}):
            data[table][key] = str(path)
    try:
        return parse(data, config_path)
    except ConfigError as exc:
        where = f"{exc.key}: " if exc.key else ""
        raise ProvisionError(
            f"the config made for {data['gateway']['id']} does not validate: {where}{exc.message} "
            "(fix the template or the inventory row)",
            Exit.CONFIG_INVALID,
        ) from None


def existing_gateway_id(path: Path) -> str | None:
    """The gateway id of a config already on the device; '' if it cannot be read as one."""
    if not path.exists():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        gateway_id = data["gateway"]["id"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return ""
    return gateway_id if isinstance(gateway_id, str) else ""
