"""Everything provisioning refuses, checked before anything is written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.config import SerialBus
from provisioning import configgen, layout, tls
from provisioning.credentials import password_source
from provisioning.errors import Exit, ProvisionError
from provisioning.inventory import Entry
from provisioning.platformkey import platform_key_source
from provisioning.service import find_unit
from provisioning.signing import check_signing_key, refuse_unsafe
from provisioning.target import Target
from provisioning.webpassword import as_installed, web_password_source


@dataclass(frozen=True)
class Plan:
    """What the checks found to be safe to do."""

    config_text: str
    bundle: tls.Bundle | None
    unit_source: Path
    summary: str
    notes: tuple[str, ...]


def _refuse_plaintext(entry: Entry, allow: bool) -> str:
    if entry.broker.tls:
        return "broker uses TLS"
    if not allow:
        raise ProvisionError(
            f"{entry.where}: broker {entry.broker.url} has no TLS: readings and credentials would "
            "cross the network in clear. Use mqtts:// or, for a broker on a closed network, "
            "run again with --allow-plaintext",
            Exit.PLAINTEXT,
        )
    return "broker WITHOUT TLS (--allow-plaintext)"


def _refuse_other_gateway(target: Target, entry: Entry, force: bool) -> str:
    config = target.path(layout.CONFIG)
    found = configgen.existing_gateway_id(config)
    if found is None:
        return "no config yet"
    if found == entry.gateway_id:
        return f"config is {entry.gateway_id}'s"
    what = f"the config of gateway {found}" if found else "not a config with a [gateway] id"
    if not force:
        raise ProvisionError(
            f"{config} is {what}, not of {entry.gateway_id} (serial {entry.serial}): this device "
            f"was set up as another gateway. If it is being re-used, move {config} and the old "
            "gateway's data in /var/lib/cgw away, or run again with --force",
            Exit.OTHER_GATEWAY,
        )
    return f"replacing {what} (--force)"


def _reuse_notes(target: Target, entry: Entry, replacing: str) -> list[str]:
    if "(--force)" not in replacing:
        return []
    notes = [
        f"the signing key and TLS key stay: register them for {entry.gateway_id}, "
        "as for a new gateway"
    ]
    if target.path(f"{layout.DATA_DIR}/buffer.db").exists():
        notes.append(
            f"{layout.DATA_DIR}/buffer.db still holds the previous gateway's readings; "
            "move it away before starting the service if they must not be sent under the new id"
        )
    return notes


def check(
    target: Target,
    entry: Entry,
    *,
    allow_plaintext: bool,
    force: bool,
    cert_bundle: Path | None,
    mqtt_password_file: Path | None,
    platform_key: Path | None = None,
    web_password_file: Path | None = None,
    unit_file: Path | None,
) -> Plan:
    if target.root is None and not target.dry_run and os.geteuid() != 0:
        raise ProvisionError(
            "provisioning the running system needs root: run it with sudo, or give --root DIR",
            Exit.SYSTEM,
        )
    done = [_refuse_plaintext(entry, allow_plaintext), _refuse_other_gateway(target, entry, force)]
    refuse_unsafe(target.path(layout.SIGNING_KEY), "private signing key")
    check_signing_key(target.path(layout.SIGNING_KEY))
    tls.check_installed(target, entry.gateway_id, force)
    bundle = None
    if cert_bundle is not None:
        if not entry.broker.tls:
            raise ProvisionError(
                f"--cert-bundle: broker {entry.broker.url} has no TLS to use it", Exit.USAGE
            )
        bundle = tls.check_bundle(cert_bundle, target.path(layout.TLS_KEY), entry.gateway_id)
        done.append(f"bundle valid until {bundle.expires:%Y-%m-%d}")
    done.append("keys private")
    password = password_source(target, entry, mqtt_password_file)
    unit_source = find_unit(unit_file)
    template = configgen.read_template(entry.template) if entry.template else None
    pinned = platform_key_source(target, platform_key)
    web = web_password_source(target, web_password_file)
    built = configgen.build(entry, template, pinned is not None, web is not None)
    text = configgen.render(entry, built)
    files = {("mqtt", "password_file"): password, ("commands", "platform_key_file"): pinned}
    with as_installed(web) as web_copy:
        files[("web", "password_file")] = web_copy
        config = configgen.validate(text, target.path(layout.CONFIG), files)
    done.append(f"config valid ({len(config.buses)} buses, {len(config.devices)} devices)")
    notes = _reuse_notes(target, entry, done[1])
    notes += [
        f"bus {bus.id} uses {bus.port}, whose number can change at boot: a stable name "
        "(rs485_port = usb:SOCKET or serial:SERIAL) is safer"
        for bus in config.buses
        if isinstance(bus, SerialBus) and bus.port.startswith("/dev/ttyUSB")
    ]
    if bundle is not None:
        notes.extend(bundle.notes)
    return Plan(text, bundle, unit_source, "; ".join(done), tuple(notes))
