"""`cgw provision`: the steps in order, each printed as it completes, then what to register."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from provisioning import layout
from provisioning.accounts import ensure_service_user
from provisioning.boardserial import read_serial
from provisioning.checks import Plan, check
from provisioning.credentials import ensure_password
from provisioning.errors import Exit, ProvisionError
from provisioning.files import Change, describe, ensure_dir, ensure_file
from provisioning.inventory import Entry, read_inventory
from provisioning.platformkey import ensure_platform_key, key_ids
from provisioning.service import ensure_service
from provisioning.signing import SigningKey, ensure_signing_key
from provisioning.target import ROOT, Ids, Target
from provisioning.tls import Tls, ensure_tls
from provisioning.udev import ensure_rules
from provisioning.webpassword import ensure_web_password

STEPS = 12
REFUSALS = {
    Exit.SERIAL_UNKNOWN,
    Exit.INVENTORY,
    Exit.CONFIG_INVALID,
    Exit.UNSAFE_KEY,
    Exit.OTHER_GATEWAY,
    Exit.PLAINTEXT,
    Exit.BAD_BUNDLE,
}


@dataclass(frozen=True)
class Options:
    inventory: Path
    serial: str | None = None
    root: Path | None = None
    allow_plaintext: bool = False
    cert_bundle: Path | None = None
    enable: bool = True
    dry_run: bool = False
    force: bool = False
    mqtt_password_file: Path | None = None
    platform_key: Path | None = None
    web_password_file: Path | None = None
    unit_file: Path | None = None


class Progress:
    def __init__(self, out: TextIO, dry_run: bool) -> None:
        self.out, self.dry_run = out, dry_run
        self.number = 0
        self.changed = 0
        self.notes: list[str] = []

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step(self, name: str, work: Callable[[], tuple[str, bool]]) -> None:
        """Run one step; `work` returns its line and whether it changed anything."""
        self.number += 1
        head = f"[{self.number}/{STEPS}] {name}:"
        try:
            text, changed = work()
        except ProvisionError as exc:
            self.print(f"{head} {'refused' if exc.status in REFUSALS else 'failed'}")
            raise
        self.changed += changed
        self.print(f"{head} {text}")
        for note in self.notes:
            self.print(f"      note: {note}")
        self.notes.clear()

    def files(self, changes: list[Change], extra: str = "") -> tuple[str, bool]:
        text = describe(changes, self.dry_run) + (f" ({extra})" if extra else "")
        return text, any(c.changed for c in changes)


class Provisioning:
    def __init__(self, options: Options, out: TextIO) -> None:
        self.o = options
        self.target = Target(options.root, options.dry_run)
        self.progress = Progress(out, options.dry_run)
        self.cgw: Ids | None = None
        self.signing: SigningKey | None = None
        self.tls: Tls | None = None

    def _inventory(self) -> tuple[str, bool]:
        inventory = read_inventory(self.o.inventory)
        if self.o.serial:
            serial, source = self.o.serial, "--serial"
        else:
            serial, source = read_serial(self.target)
        self.entry: Entry = inventory.find(serial, source)
        e = self.entry
        return (
            f"serial {serial} ({source}) is {e.gateway_id}, site {e.site}, "
            f"broker {e.broker.url} ({e.where})",
            False,
        )

    def _checks(self) -> tuple[str, bool]:
        self.plan: Plan = check(
            self.target,
            self.entry,
            allow_plaintext=self.o.allow_plaintext,
            force=self.o.force,
            cert_bundle=self.o.cert_bundle,
            mqtt_password_file=self.o.mqtt_password_file,
            platform_key=self.o.platform_key,
            web_password_file=self.o.web_password_file,
            unit_file=self.o.unit_file,
        )
        self.progress.notes.extend(self.plan.notes)
        return f"ok: {self.plan.summary}", False

    def _user(self) -> tuple[str, bool]:
        accounts = ensure_service_user(self.target)
        self.cgw = accounts.ids
        return accounts.describe(self.o.dry_run), accounts.action != "unchanged"

    @property
    def _root_cgw(self) -> Ids | None:
        """root:cgw, for what the service reads but must not change."""
        return Ids(0, self.cgw.gid) if self.cgw else None

    def _directories(self) -> tuple[str, bool]:
        t, cgw = self.target, self.cgw
        return self.progress.files(
            [
                ensure_dir(t, t.path(layout.ETC_DIR), 0o755, ROOT),
                ensure_dir(t, t.path(layout.TLS_DIR), 0o750, self._root_cgw),
                ensure_dir(t, t.path(layout.DATA_DIR), 0o700, cgw),
                ensure_dir(t, t.path(layout.RUNTIME_DIR), 0o755, cgw),
            ]
        )

    def _signing(self) -> tuple[str, bool]:
        self.signing = ensure_signing_key(self.target, self.cgw)
        kid = self.signing.key_id
        return self.progress.files(self.signing.changes, f"key id {kid}" if kid else "")

    def _tls(self) -> tuple[str, bool]:
        e = self.entry
        if not e.broker.tls:
            return "skipped: the broker has no TLS", False
        self.tls = ensure_tls(self.target, e.gateway_id, e.site, self.cgw, self.plan.bundle)
        self.progress.notes.extend(self.tls.notes)
        return self.progress.files(self.tls.changes, f"certificate {self.tls.certificate}")

    def _password(self) -> tuple[str, bool]:
        owner = self._root_cgw or ROOT
        change = ensure_password(self.target, self.entry, self.o.mqtt_password_file, owner)
        if change is None:
            return "skipped: no mqtt_username in the inventory", False
        return self.progress.files([change])

    def _platform_key(self) -> tuple[str, bool]:
        change = ensure_platform_key(self.target, self.o.platform_key, self._root_cgw or ROOT)
        if change is None:
            return "skipped: no --platform-key: the gateway takes no commands", False
        ids = (
            ", ".join(key_ids(self.target.path(layout.PLATFORM_KEY))) if not self.o.dry_run else ""
        )
        return self.progress.files([change], f"key id {ids}" if ids else "")

    def _web_password(self) -> tuple[str, bool]:
        change = ensure_web_password(self.target, self.o.web_password_file, self.cgw)
        if change is None:
            return "skipped: no --web-password-file: the commissioning page stays off", False
        return self.progress.files([change])

    def _config(self) -> tuple[str, bool]:
        t = self.target
        path = t.path(layout.CONFIG)
        content = self.plan.config_text.encode("utf-8")
        changes = []
        if path.exists() and path.read_bytes() != content:
            previous = path.read_bytes()
            changes.append(ensure_file(t, t.path(layout.CONFIG_PREVIOUS), previous, 0o644, ROOT))
        changes.insert(0, ensure_file(t, path, content, 0o644, ROOT))
        if changes[0].action == "updated" and t.root is None:
            self.progress.notes.append(
                "a running gateway reads its config at start: `systemctl restart cgw`"
            )
        return self.progress.files(changes)

    def _udev(self) -> tuple[str, bool]:
        return self.progress.files([ensure_rules(self.target)])

    def _service(self) -> tuple[str, bool]:
        changes = ensure_service(self.target, self.plan.unit_source, self.o.enable)
        return self.progress.files(changes, "" if self.o.enable else "not enabled: --no-enable")

    def run(self) -> int:
        p = self.progress
        if self.o.dry_run:
            p.print("dry run: nothing is written")
        p.step("inventory", self._inventory)
        p.step("checks", self._checks)
        p.step("service user", self._user)
        p.step("directories", self._directories)
        p.step("signing key", self._signing)
        p.step("TLS key and CSR", self._tls)
        p.step("MQTT password", self._password)
        p.step("platform key", self._platform_key)
        p.step("page password", self._web_password)
        p.step("config", self._config)
        p.step("udev rules", self._udev)
        p.step("service", self._service)
        self._registration()
        return Exit.OK

    def _registration(self) -> None:
        p, e, signing, tls = self.progress, self.entry, self.signing, self.tls
        assert signing is not None
        if not self.target.chown:
            p.print("note: not running as root: files keep your ownership (cgw's when run as root)")
        pending = "(made on a real run)"
        p.print(f"registration: give the platform these for gateway {e.gateway_id}, site {e.site}")
        p.print(f"  public key   {signing.public or pending}")
        p.print(f"  key id       {signing.key_id or pending}")
        p.print(f"  fingerprint  {signing.fingerprint or pending}")
        if tls is None:
            p.print("  CSR          none: the broker has no TLS")
        else:
            p.print(f"  CSR          {tls.csr} (CN={e.gateway_id}, O={e.site})")
            if tls.certificate == "not yet installed":
                p.print(
                    "  certificate  not yet installed: with the signed client.pem and the CA's "
                    "ca.pem in a folder DIR, run this again adding --cert-bundle DIR"
                )
            else:
                p.print(f"  certificate  {tls.certificate}")
        if self.o.dry_run:
            p.print(f"dry run: {steps(p.changed)} would change something; nothing was written")
        elif p.changed:
            p.print(f"done: {steps(p.changed)} changed something")
        else:
            p.print("done: nothing to change, everything was already right")


def steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def provision(options: Options, out: TextIO | None = None) -> int:
    return Provisioning(options, out or sys.stdout).run()
