"""`cgw provision`, run into temporary trees with --root: what a fresh run creates, that a second
run changes nothing, and each refusal with its exit status. The main cases go through the real
command line (`python -m gateway.cli provision` as a subprocess)."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from buffer.keys import fingerprint, key_id, load_public_key
from gateway.cli import main
from gateway.config import SerialBus, load
from provisioning import tomlwriter
from provisioning.broker import parse_broker
from provisioning.errors import Exit
from provisioning.service import wanted_by
from provisioning.udev import rules, stable_port
from tests.support.pki import Authority

REPO = Path(__file__).resolve().parent.parent
SERIAL = "10000000abcdef01"
GW = "gw-plant-a-01"
AS_ROOT = os.geteuid() == 0

TEMPLATE = """\
[gateway]
timezone = "Asia/Shanghai"
clock = "ntp"

[mqtt]
topic_prefix = "cgw/v1"

[[buses]]
id = "rs485-1"
type = "rtu"
port = "/dev/ttyUSB0"
parity = "E"

[[buses]]
id = "lan"
type = "tcp"
host = "192.168.1.50"

[[devices]]
id = "main-incomer"
bus = "rs485-1"
unit = 1
profile = "eastron_sdm630"

[[devices]]
id = "pv"
bus = "lan"
unit = 1
profile = "eastron_sdm630"

[accounting]
interval_min = 15
green_certificates_kwh = { "2026-11" = 12000 }

[[accounting.meters]]
device = "main-incomer"
role = "grid_import"
max_per_hour = 2000
"""

CSV = """\
serial,gateway_id,site,broker,timezone,template,rs485_port,baudrate,bus.lan.host
# plant A, line 1
10000000abcdef01,gw-plant-a-01,plant-a,mqtts://mqtt.example.com,,plant-a.toml,usb:1-1.3,19200,10.0.0.7
10000000abcdef02,gw-plant-a-02,plant-a,mqtt://10.0.0.5,Asia/Shanghai,plant-a.toml,serial:A10KZP3B,,
"""

TOML = """\
[defaults]
template = "plant-a.toml"

[[gateways]]
serial = "10000000abcdef01"
gateway_id = "gw-plant-a-01"
site = "plant-a"
broker = "mqtts://mqtt.example.com"
rs485_port = "usb:1-1.3"
baudrate = 19200
bus.lan.host = "10.0.0.7"

[[gateways]]
serial = "10000000abcdef02"
gateway_id = "gw-plant-a-02"
site = "plant-a"
broker = "mqtt://10.0.0.5"
timezone = "Asia/Shanghai"
rs485_port = "serial:A10KZP3B"
"""

STAND_IN_UNIT = """\
[Unit]
Description=cgw (stand-in for systemd/cgw.service)
[Service]
ExecStart=/opt/cgw/venv/bin/cgw run
[Install]
WantedBy=multi-user.target
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with the inventories, the template and (if the repository has none yet) a unit."""
    folder = tmp_path / "it"
    folder.mkdir()
    (folder / "plant-a.toml").write_text(TEMPLATE)
    (folder / "inventory.csv").write_text(CSV)
    (folder / "inventory.toml").write_text(TOML)
    (folder / "cgw.service").write_text(STAND_IN_UNIT)
    return folder


def new_root(tmp_path: Path, name: str = "root", serial: str = SERIAL) -> Path:
    root = tmp_path / name
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "serial-number").write_bytes(serial.encode() + b"\0")
    return root


def args(site: Path, root: Path, *extra: str, inventory: str = "inventory.csv") -> list[str]:
    argv = ["provision", "--inventory", str(site / inventory), "--root", str(root), *extra]
    if not (REPO / "systemd" / "cgw.service").is_file():
        argv += ["--unit-file", str(site / "cgw.service")]
    return argv


def cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The real command line, as IT runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_here(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The same entry point in this process (quicker, for the many refusal cases)."""
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root: kind, content hash or link, mtime, mode and owner."""
    found: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            if path.is_symlink():
                what: object = ("link", os.readlink(path))
            elif path.is_dir():
                what = "dir"
            else:
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (
                what,
                st.st_mtime_ns,
                st.st_mode,
                st.st_uid,
                st.st_gid,
            )
    return found


def colon_entry(path: Path, name: str) -> list[str]:
    return next(
        line.split(":") for line in path.read_text().splitlines() if line.split(":")[0] == name
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def sign_csr(ca: Authority, csr_pem: bytes, valid_days: float = 30) -> bytes:
    csr = x509.load_pem_x509_csr(csr_pem)
    now = datetime.datetime.now(datetime.UTC)
    start = (
        now - datetime.timedelta(days=1)
        if valid_days > 0
        else now + datetime.timedelta(days=valid_days - 1)
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def bundle(folder: Path, ca: Authority, cert: bytes, key: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "ca.pem").write_bytes(ca.ca_file.read_bytes())
    (folder / "client.pem").write_bytes(cert)
    if key is not None:
        (folder / "client.key").write_bytes(key)
    return folder


# --- a fresh device, and the second run ---------------------------------------------------------


def test_fresh_provision_creates_the_whole_tree(tmp_path: Path, site: Path) -> None:
    root = new_root(tmp_path)
    done = cli(args(site, root))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert [int(n) for n in re.findall(r"^\[(\d+)/12\]", out, re.MULTILINE)] == list(range(1, 13))

    # The service user: a system account without a login, in dialout and gpio.
    user = colon_entry(root / "etc/passwd", "cgw")
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000 and gid < 1000
    assert user[5:] == ["/var/lib/cgw", "/usr/sbin/nologin"]
    assert int(colon_entry(root / "etc/group", "cgw")[2]) == gid
    for group in ("dialout", "gpio"):
        assert "cgw" in colon_entry(root / "etc/group", group)[3].split(",")
    assert colon_entry(root / "etc/shadow", "cgw")[1] == "!"

    # Folders and files with their modes (and owners, when the test may set them).
    expected = {
        "etc/cgw": (0o755, 0, 0),
        "etc/cgw/tls": (0o750, 0, gid),
        "var/lib/cgw": (0o700, uid, gid),
        "run/cgw": (0o755, uid, gid),
        "var/lib/cgw/signing.key": (0o600, uid, gid),
        "var/lib/cgw/signing.pub": (0o644, uid, gid),
        "etc/cgw/tls/client.key": (0o600, uid, gid),
        "etc/cgw/tls/client.csr": (0o644, 0, 0),
        "etc/cgw/gateway.toml": (0o644, 0, 0),
        "etc/udev/rules.d/70-cgw-rs485.rules": (0o644, 0, 0),
        "etc/systemd/system/cgw.service": (0o644, 0, 0),
    }
    for relative, (want_mode, want_uid, want_gid) in expected.items():
        st = (root / relative).stat()
        assert stat.S_IMODE(st.st_mode) == want_mode, relative
        if AS_ROOT:
            assert (st.st_uid, st.st_gid) == (want_uid, want_gid), relative

    # The CSR: valid, for this gateway, for the key beside it.
    csr = x509.load_pem_x509_csr((root / "etc/cgw/tls/client.csr").read_bytes())
    key = serialization.load_pem_private_key((root / "etc/cgw/tls/client.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == GW
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "plant-a"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == key.public_key().public_bytes(serialization.Encoding.DER, spki)

    # The config loads as the daemon loads it, with the inventory's and the template's values.
    config = load(root / "etc/cgw/gateway.toml")
    assert (config.gateway_id, config.site, config.timezone) == (GW, "plant-a", "Asia/Shanghai")
    assert (config.mqtt.host, config.mqtt.port) == ("mqtt.example.com", 8883)
    assert config.mqtt.tls is not None
    assert str(config.mqtt.tls.key_file) == "/etc/cgw/tls/client.key"
    assert str(config.mqtt.tls.cert_file) == "/etc/cgw/tls/client.pem"
    assert str(config.mqtt.tls.ca_file) == "/etc/cgw/tls/ca.pem"
    assert (
        str(config.data_dir) == "/var/lib/cgw"
        and str(config.signing_key) == "/var/lib/cgw/signing.key"
    )
    serial_bus = config.bus("rs485-1")
    assert isinstance(serial_bus, SerialBus)
    assert (serial_bus.port, serial_bus.baudrate, serial_bus.parity) == (
        "/dev/rs485-usb-1-1.3",
        19200,
        "E",
    )
    assert config.bus("lan").host == "10.0.0.7"  # type: ignore[union-attr]
    assert [d.id for d in config.devices] == ["main-incomer", "pv"]
    assert config.accounting.meters[0].device == "main-incomer"

    # udev rules as shipped, and the service enabled as `systemctl enable` would.
    assert (root / "etc/udev/rules.d/70-cgw-rs485.rules").read_bytes() == rules()
    link = root / "etc/systemd/system/multi-user.target.wants/cgw.service"
    assert link.is_symlink() and os.readlink(link) == "/etc/systemd/system/cgw.service"

    # Registration: the fingerprint and key id printed are those of signing.pub; the CSR's path.
    public = load_public_key((root / "var/lib/cgw/signing.pub").read_text())
    assert re.search(rf"^  fingerprint  {re.escape(fingerprint(public))}$", out, re.MULTILINE)
    assert re.search(rf"^  key id       {key_id(public)}$", out, re.MULTILINE)
    assert f"created {root}/var/lib/cgw/signing.key" in out
    assert f"  CSR          {root}/etc/cgw/tls/client.csr (CN={GW}, O=plant-a)" in out
    assert "not yet installed" in out


def test_a_second_run_changes_nothing(tmp_path: Path, site: Path) -> None:
    root = new_root(tmp_path)
    assert cli(args(site, root)).returncode == 0
    before = snapshot(root)
    again = cli(args(site, root))
    assert again.returncode == 0, again.stderr
    assert snapshot(root) == before  # same bytes, mtimes, modes and owners, nothing added
    steps = re.findall(r"^\[(\d+)/12\] ([^:]+): (\w+)", again.stdout, re.MULTILINE)
    assert {name: word for _, name, word in steps if int(_) > 2} == {
        "service user": "unchanged",
        "directories": "unchanged",
        "signing key": "unchanged",
        "TLS key and CSR": "unchanged",
        "MQTT password": "skipped",
        "platform key": "skipped",
        "page password": "skipped",
        "config": "unchanged",
        "udev rules": "unchanged",
        "service": "unchanged",
    }
    assert "done: nothing to change" in again.stdout


def test_dry_run_writes_nothing(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = new_root(tmp_path)
    before = snapshot(root)
    status, out, _ = run_here(args(site, root, "--dry-run"), capsys)
    assert status == 0
    assert snapshot(root) == before
    assert "would create" in out and "nothing was written" in out


def test_csv_and_toml_inventories_give_the_same_config(tmp_path: Path, site: Path) -> None:
    configs = []
    for inventory in ("inventory.csv", "inventory.toml"):
        root = new_root(tmp_path, inventory)
        done = cli(args(site, root, inventory=inventory))
        assert done.returncode == 0, done.stderr
        configs.append((root / "etc/cgw/gateway.toml").read_bytes())
    assert configs[0] == configs[1]


def test_an_existing_system_tree_keeps_its_accounts(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = new_root(tmp_path)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nsystemd-network:x:999:999::/:/usr/sbin/nologin\n"
    )
    (root / "etc/group").write_text(
        "root:x:0:\ndialout:x:20:pi\nsystemd-network:x:999:\ngpio:x:997:pi\n"
    )
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\ndialout:*::pi\ngpio:!::pi\n")
    status, _, err = run_here(args(site, root), capsys)
    assert status == 0, err
    user = colon_entry(root / "etc/passwd", "cgw")
    assert int(user[2]) not in (0, 999) and int(user[2]) < 1000
    assert colon_entry(root / "etc/group", "dialout") == ["dialout", "x", "20", "pi,cgw"]
    assert colon_entry(root / "etc/group", "gpio") == ["gpio", "x", "997", "pi,cgw"]
    assert colon_entry(root / "etc/gshadow", "gpio")[3] == "pi,cgw"
    assert (
        (root / "etc/passwd")
        .read_text()
        .startswith("root:x:0:0:root:/root:/bin/bash\nsystemd-network:")
    )


# --- refusals -----------------------------------------------------------------------------------


def test_refuses_a_signing_key_readable_by_others(tmp_path: Path, site: Path) -> None:
    root = new_root(tmp_path)
    assert cli(args(site, root)).returncode == 0
    key = root / "var/lib/cgw/signing.key"
    key.chmod(0o644)
    before = snapshot(root)
    done = cli(args(site, root))
    assert done.returncode == Exit.UNSAFE_KEY == 6
    assert f"chmod 600 {key}" in done.stderr and "readable by others" in done.stderr
    assert "[2/12] checks: refused" in done.stdout
    assert snapshot(root) == before


def test_refuses_a_tls_key_readable_by_others(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = new_root(tmp_path)
    assert run_here(args(site, root), capsys)[0] == 0
    (root / "etc/cgw/tls/client.key").chmod(0o640)
    status, _, err = run_here(args(site, root), capsys)
    assert status == Exit.UNSAFE_KEY
    assert "chmod 600" in err


def test_refuses_the_config_of_another_gateway(tmp_path: Path, site: Path) -> None:
    root = new_root(tmp_path)
    config = root / "etc/cgw/gateway.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[gateway]\nid = "gw-old-07"\nsite = "plant-b"\n')
    done = cli(args(site, root))
    assert done.returncode == Exit.OTHER_GATEWAY == 7
    assert "gw-old-07" in done.stderr and GW in done.stderr and "--force" in done.stderr
    assert not (root / "etc/passwd").exists()  # refused before anything was done
    forced = cli(args(site, root, "--force"))
    assert forced.returncode == 0, forced.stderr
    assert load(config).gateway_id == GW
    assert "gw-old-07" in (root / "etc/cgw/gateway.toml.previous").read_text()


def test_refuses_a_broker_without_tls_unless_allowed(tmp_path: Path, site: Path) -> None:
    root = new_root(tmp_path, serial="10000000abcdef02")
    done = cli(args(site, root))
    assert done.returncode == Exit.PLAINTEXT == 8
    assert "mqtt://10.0.0.5:1883 has no TLS" in done.stderr and "--allow-plaintext" in done.stderr
    assert sorted(p.name for p in root.iterdir()) == ["proc"]
    allowed = cli(args(site, root, "--allow-plaintext"))
    assert allowed.returncode == 0, allowed.stderr
    config = load(root / "etc/cgw/gateway.toml")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("10.0.0.5", 1883, None)
    assert config.bus("rs485-1").port == "/dev/rs485-A10KZP3B"
    assert "TLS key and CSR: skipped" in allowed.stdout
    assert not (root / "etc/cgw/tls/client.key").exists()


def test_refuses_a_serial_not_in_the_inventory(tmp_path: Path, site: Path) -> None:
    root = new_root(tmp_path, serial="10000000deadbeef")
    done = cli(args(site, root))
    assert done.returncode == Exit.SERIAL_UNKNOWN == 3
    assert "serial 10000000deadbeef" in done.stderr and "not found in" in done.stderr
    assert "serial-number" in done.stderr  # where the serial was read


def test_reads_the_serial_from_machine_id_or_the_option(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    status, _, err = run_here(args(site, root), capsys)
    assert status == Exit.SERIAL_UNKNOWN and "0123456789abcdef0123456789abcdef (from" in err
    status, out, err = run_here(args(site, root, "--serial", SERIAL.upper()), capsys)
    assert status == 0, err
    assert "(--serial) is gw-plant-a-01" in out


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "inventory.csv",
            CSV + "10000000abcdef03,gw-3,plant-a\n",
            "line 5: 3 fields, but the header has 9",
        ),
        (
            "inventory.csv",
            CSV.replace("mqtt://10.0.0.5", "http://10.0.0.5"),
            "line 4: broker 'http://10.0.0.5'",
        ),
        (
            "inventory.csv",
            CSV.replace("gateway_id", "gatway_id"),
            "line 1: unknown column 'gatway_id'",
        ),
        (
            "inventory.csv",
            CSV + "10000000abcdef01,gw-9,plant-a,mqtts://x,,,,,\n",
            "line 5: serial 10000000abcdef01 is already listed (line 3)",
        ),
        (
            "inventory.csv",
            CSV.replace(",19200,", ",fast,"),
            "line 3: baudrate must be a whole number",
        ),
        (
            "inventory.csv",
            CSV.replace(",Asia/Shanghai,", ",Mars/Olympus,"),
            "line 4: unknown time zone",
        ),
        (
            "inventory.csv",
            CSV.replace("gw-plant-a-02", "gw plant a 02"),
            "line 4: gateway_id 'gw plant a 02' is not a valid",
        ),
        (
            "inventory.toml",
            TOML.replace('site = "plant-a"\nbroker = "mqtt://', 'broker = "mqtt://'),
            "line 13 (gateways[1]): site is empty",
        ),
        (
            "inventory.toml",
            TOML.replace("baudrate = 19200", 'baudrate = "19200"'),
            "line 4 (gateways[0]): baudrate must be a whole number",
        ),
        ("inventory.toml", TOML.replace("[defaults]", "[defaults"), "not valid TOML"),
    ],
)
def test_refuses_a_malformed_inventory_with_its_line(
    tmp_path: Path,
    site: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    expected: str,
) -> None:
    (site / name).write_text(text)
    status, _, err = run_here(args(site, new_root(tmp_path), inventory=name), capsys)
    assert status == Exit.INVENTORY == 4
    assert f"{site / name}: " in err
    assert expected in err


def test_refuses_a_template_that_does_not_make_a_valid_config(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "plant-a.toml").write_text(
        TEMPLATE.replace("unit = 1\nprofile", "unit = 300\nprofile", 1)
    )
    status, _, err = run_here(args(site, new_root(tmp_path)), capsys)
    assert status == Exit.CONFIG_INVALID == 5
    assert "devices[0].unit: must be between 1 and 247, not 300" in err
    (site / "plant-a.toml").write_text(
        TEMPLATE + '[[buses]]\nid = "rs485-2"\ntype = "rtu"\nport = "/dev/ttyAMA0"\n'
    )
    status, _, err = run_here(args(site, new_root(tmp_path, "other")), capsys)
    assert status == Exit.INVENTORY and "has 2 (rs485-1, rs485-2): use bus.<id>.port" in err


# --- certificates -------------------------------------------------------------------------------


def test_installs_the_certificate_signed_for_its_csr(tmp_path: Path, site: Path) -> None:
    root = new_root(tmp_path)
    assert cli(args(site, root)).returncode == 0
    ca = Authority(tmp_path / "ca", "platform-ca")
    cert = sign_csr(ca, (root / "etc/cgw/tls/client.csr").read_bytes())
    folder = bundle(tmp_path / "bundle", ca, cert)
    done = cli(args(site, root, "--cert-bundle", str(folder)))
    assert done.returncode == 0, done.stderr
    assert (root / "etc/cgw/tls/client.pem").read_bytes() == cert
    assert (root / "etc/cgw/tls/ca.pem").read_bytes() == ca.ca_file.read_bytes()
    assert "certificate  installed, valid until" in done.stdout
    before = snapshot(root)
    for extra in (["--cert-bundle", str(folder)], []):  # a re-run, with or without the bundle
        again = cli(args(site, root, *extra))
        assert again.returncode == 0, again.stderr
        assert "done: nothing to change" in again.stdout
    assert snapshot(root) == before


def test_installs_a_bundle_with_its_own_key(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = Authority(tmp_path / "ca", "platform-ca")
    issued = ca.issue(GW, server=False)
    folder = bundle(tmp_path / "bundle", ca, issued.cert.read_bytes(), issued.key.read_bytes())
    root = new_root(tmp_path)
    status, _, err = run_here(args(site, root, "--cert-bundle", str(folder)), capsys)
    assert status == 0, err
    key = root / "etc/cgw/tls/client.key"
    assert key.read_bytes() == issued.key.read_bytes() and mode(key) == 0o600
    csr = x509.load_pem_x509_csr((root / "etc/cgw/tls/client.csr").read_bytes())
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    assert csr.public_key() == cert.public_key()  # the CSR follows the installed key (renewals)


def test_refuses_a_bundle_that_does_not_fit(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = new_root(tmp_path)
    assert run_here(args(site, root), capsys)[0] == 0
    csr = (root / "etc/cgw/tls/client.csr").read_bytes()
    ca = Authority(tmp_path / "ca", "platform-ca")
    other_ca = Authority(tmp_path / "other-ca", "other-ca")
    stranger = ca.issue(GW, server=False)  # right name, but another key
    other_gateway = ca.issue("gw-plant-a-02", server=False)
    cases = {
        "mismatched": (
            bundle(tmp_path / "b1", ca, stranger.cert.read_bytes()),
            "is not the certificate of the key",
        ),
        "expired": (bundle(tmp_path / "b2", ca, sign_csr(ca, csr, valid_days=-1)), "expired on"),
        "other issuer": (
            bundle(tmp_path / "b3", ca, sign_csr(other_ca, csr)),
            "is not issued by a certificate in",
        ),
        "other gateway": (
            bundle(
                tmp_path / "b4", ca, other_gateway.cert.read_bytes(), other_gateway.key.read_bytes()
            ),
            "is for gw-plant-a-02, not gateway gw-plant-a-01",
        ),
    }
    before = snapshot(root)
    for name, (folder, expected) in cases.items():
        status, out, err = run_here(args(site, root, "--cert-bundle", str(folder)), capsys)
        assert status == Exit.BAD_BUNDLE == 9, name
        assert expected in err, (name, err)
        assert "[2/12] checks: refused" in out
    assert snapshot(root) == before


def test_installs_the_mqtt_password_without_putting_it_in_the_inventory(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "inventory.csv").write_text(
        CSV.replace("bus.lan.host", "mqtt_username").replace("10.0.0.7", GW)
    )
    root = new_root(tmp_path)
    status, _, err = run_here(args(site, root), capsys)
    assert status == Exit.USAGE and "--mqtt-password-file" in err
    secret = tmp_path / "password.txt"
    secret.write_text("s3cret\n")
    status, _, err = run_here(args(site, root, "--mqtt-password-file", str(secret)), capsys)
    assert status == 0, err
    installed = root / "etc/cgw/mqtt.password"
    assert installed.read_text() == "s3cret\n" and mode(installed) == 0o640
    data = tomllib.loads((root / "etc/cgw/gateway.toml").read_text())
    assert (
        data["mqtt"]["username"] == GW and data["mqtt"]["password_file"] == "/etc/cgw/mqtt.password"
    )
    assert "s3cret" not in (root / "etc/cgw/gateway.toml").read_text()


def test_pins_the_platform_key_for_signed_commands(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from buffer.keys import public_key_text
    from gateway.config import parse
    from tests.support.keys import make_signer

    root = new_root(tmp_path)
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    status, _, err = run_here(args(site, root, "--platform-key", str(bad)), capsys)
    assert status == Exit.USAGE and "--platform-key" in err and not (root / "etc").exists()
    platform = make_signer(tmp_path / "platform")
    given = tmp_path / "platform.pub"
    given.write_text(public_key_text(platform.public) + "\n")
    status, out, err = run_here(args(site, root, "--platform-key", str(given)), capsys)
    assert status == 0, err
    assert (
        f"[8/12] platform key: created {root}/etc/cgw/platform.pub (key id {platform.kid})" in out
    )
    installed = root / "etc/cgw/platform.pub"
    assert installed.read_text() == given.read_text() and mode(installed) == 0o644
    data = tomllib.loads((root / "etc/cgw/gateway.toml").read_text())
    assert data["commands"] == {"platform_key_file": "/etc/cgw/platform.pub"}
    data["commands"]["platform_key_file"] = str(installed)
    data["mqtt"].pop("tls")  # its files are not made by provisioning: not what this test is about
    config = parse(data, root / "etc/cgw/gateway.toml")
    assert config.commands.enabled and config.commands.platform_keys == (
        public_key_text(platform.public),
    )
    # A re-run without the option keeps the installed key pinned.
    status, out, _ = run_here(args(site, root), capsys)
    assert status == 0 and "[8/12] platform key: unchanged" in out


def test_installs_the_page_password_hash_and_enables_the_page(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.web.auth import hash_password, verify_password

    root = new_root(tmp_path)
    plain = tmp_path / "plain.txt"
    plain.write_text("a-password\n")
    status, _, err = run_here(args(site, root, "--web-password-file", str(plain)), capsys)
    assert status == Exit.USAGE and "not a password hash" in err
    given = tmp_path / "web.hash"
    given.write_text(hash_password("a-password") + "\n")
    given.chmod(0o644)  # as on a FAT boot partition: installed private all the same
    status, out, err = run_here(args(site, root, "--web-password-file", str(given)), capsys)
    assert status == 0, err
    assert f"[9/12] page password: created {root}/etc/cgw/web.password" in out
    installed = root / "etc/cgw/web.password"
    assert mode(installed) == 0o600 and verify_password("a-password", installed.read_text())
    data = tomllib.loads((root / "etc/cgw/gateway.toml").read_text())
    assert data["web"] == {"password_file": "/etc/cgw/web.password"}


# --- the pieces ---------------------------------------------------------------------------------


def test_the_toml_writer_round_trips_the_example_config() -> None:
    data = tomllib.loads((REPO / "gateway/examples/gateway.toml").read_text())
    data["odd keys"] = {
        "a/b": {"x": 1.5, "s": 'quote " and \\ and \n and \x7f'},
        "t": [1, 2],
        "e": {},
    }
    assert tomllib.loads(tomlwriter.dumps(data)) == data
    assert tomlwriter.dumps(data) == tomlwriter.dumps(tomllib.loads(tomlwriter.dumps(data)))


def test_stable_port_names_match_the_udev_rules() -> None:
    text = rules().decode()
    assert stable_port("usb:1-1.3") == "/dev/rs485-usb-1-1.3" and 'SYMLINK+="rs485-usb-%b"' in text
    assert (
        stable_port("serial:A10KZP3B") == "/dev/rs485-A10KZP3B"
        and 'SYMLINK+="rs485-$attr{serial}"' in text
    )
    assert stable_port("/dev/ttyAMA0") == "/dev/ttyAMA0"
    with pytest.raises(ValueError, match="usb:SOCKET"):
        stable_port("ttyUSB0")
    for vendor, product in (
        ("0403", "6001"),
        ("0403", "6015"),
        ("1a86", "7523"),
        ("10c4", "ea60"),
        ("067b", "2303"),
    ):
        line = next(ln for ln in text.splitlines() if f'ATTRS{{idVendor}}=="{vendor}"' in ln)
        assert product in line and 'GROUP="dialout"' in line and 'MODE="0660"' in line


def test_broker_urls_and_wanted_by() -> None:
    assert parse_broker("mqtts://mqtt.example.com").url == "mqtts://mqtt.example.com:8883"
    assert parse_broker("mqtt://[fd00::1]:1884").url == "mqtt://[fd00::1]:1884"
    for bad in ("tcp://x", "mqtts://", "mqtts://u:p@x", "mqtts://x/topic", "mqtts://x:0"):
        with pytest.raises(ValueError):
            parse_broker(bad)
    assert wanted_by("[Install]\nWantedBy=multi-user.target network-online.target\n") == (
        "multi-user.target",
        "network-online.target",
    )
    assert wanted_by("[Service]\nExecStart=/bin/true\n") == ("multi-user.target",)


def test_the_documented_inventories_and_template_work(tmp_path: Path) -> None:
    """docs/PROVISIONING.md: its CSV and TOML give the same gateways, whose configs validate."""
    from dataclasses import replace

    from provisioning import configgen
    from provisioning.inventory import read_inventory

    text = (REPO / "docs/PROVISIONING.md").read_text()

    def block(after: str, language: str) -> str:
        start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
        return text[start : text.index("```", start)]

    (tmp_path / "inventory.csv").write_text(block("### CSV", "csv"))
    (tmp_path / "inventory.toml").write_text(block("### TOML", "toml"))
    for name in ("plant-a.toml", "plant-b.toml"):
        (tmp_path / name).write_text(block("### Site templates", "toml"))
    csv_rows, toml_rows = (
        read_inventory(tmp_path / n).entries for n in ("inventory.csv", "inventory.toml")
    )
    assert [replace(e, where="") for e in csv_rows] == [replace(e, where="") for e in toml_rows]
    assert len(csv_rows) == 3
    for entry in csv_rows:
        assert entry.template is not None
        config_text = configgen.render(
            entry, configgen.build(entry, configgen.read_template(entry.template))
        )
        config = configgen.validate(config_text, tmp_path / "gateway.toml")
        assert config.gateway_id == entry.gateway_id and len(config.devices) == 2


def test_refuses_an_unusable_signing_key_before_writing(
    tmp_path: Path, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = new_root(tmp_path)
    key = root / "var/lib/cgw/signing.key"
    key.parent.mkdir(parents=True)
    key.write_text("not a key\n")
    key.chmod(0o600)
    status, out, err = run_here(args(site, root), capsys)
    assert status == Exit.UNSAFE_KEY and "cannot load the signing key" in err
    assert "[2/12] checks: refused" in out and not (root / "etc").exists()
