"""`cgw provision`: the arguments and the entry point gateway/cli.py calls."""

from __future__ import annotations

import argparse
from pathlib import Path

from provisioning.errors import ProvisionError
from provisioning.runner import Options, provision

__all__ = ["ProvisionError", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inventory",
        required=True,
        type=Path,
        help="the inventory: CSV (header row) or TOML ([[gateways]]), one gateway per row",
    )
    parser.add_argument(
        "--serial",
        help="this board's serial (default: read from the device tree, else /etc/machine-id)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        help="provision the tree under DIR instead of this system (images, tests)",
    )
    parser.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="accept an mqtt:// broker without TLS (closed networks only)",
    )
    parser.add_argument(
        "--cert-bundle",
        type=Path,
        metavar="DIR",
        help="install the TLS certificate from DIR: ca.pem, client.pem (and client.key if "
        "it was not made on this device); checked first",
    )
    parser.add_argument(
        "--no-enable", action="store_true", help="install the systemd unit but do not enable it"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check and say what would change; write nothing"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a config (and TLS certificate) of another gateway id on this device",
    )
    parser.add_argument(
        "--mqtt-password-file",
        type=Path,
        metavar="FILE",
        help="the MQTT password, for a row with mqtt_username; installed as /etc/cgw/mqtt.password",
    )
    parser.add_argument(
        "--platform-key",
        type=Path,
        metavar="FILE",
        help="the platform's public key(s) for signed commands; installed as /etc/cgw/platform.pub",
    )
    parser.add_argument(
        "--web-password-file",
        type=Path,
        metavar="FILE",
        help="the commissioning page's password hash (cgw web-password --output FILE); "
        "installed as /etc/cgw/web.password, and the page enabled",
    )
    parser.add_argument(
        "--unit-file",
        type=Path,
        metavar="FILE",
        help="the systemd unit to install (default: the one shipped with cgw)",
    )


def run(args: argparse.Namespace) -> int:
    return provision(
        Options(
            inventory=args.inventory,
            serial=args.serial,
            root=args.root.resolve() if args.root else None,
            allow_plaintext=args.allow_plaintext,
            cert_bundle=args.cert_bundle,
            enable=not args.no_enable,
            dry_run=args.dry_run,
            force=args.force,
            mqtt_password_file=args.mqtt_password_file,
            platform_key=args.platform_key,
            web_password_file=args.web_password_file,
            unit_file=args.unit_file,
        )
    )
