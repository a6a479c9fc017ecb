"""The Raspberry Pi OS image: its scripts are linted, and the install steps it runs are run here.

image/install.sh is what the pi-gen stage runs inside the image's chroot (--root /); here the same
script runs against a directory tree with --root, with a wheel built from this repository and its
dependencies installed by pip (from this machine's index and cache). Then the first-boot script
runs against that tree (CGW_ROOT) with an inventory on its boot partition. The pi-gen build itself
needs root, qemu and the network and is not run here (docs/IMAGE.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "image"
UNIT = REPO / "systemd" / "cgw.service"
VENV = "opt/cgw/venv"
SERIAL = "10000000c0ffee01"

# What pi-gen's stage 1 writes; export-image replaces BOOTDEV and ROOTDEV by PARTUUIDs.
PI_GEN_FSTAB = """\
proc            /proc           proc    defaults          0       0
BOOTDEV  /boot/firmware  vfat    defaults          0       2
ROOTDEV  /               ext4    defaults,noatime  0       1
"""
CONFIG_TXT = """\
# For more options and information see http://rptl.io/configtxt
dtparam=audio=on
auto_initramfs=1

[cm4]
otg_mode=1

[all]
"""
INVENTORY = f"""\
serial,gateway_id,site,broker
{SERIAL},gw-image-01,plant-a,mqtts://broker.example.com:8883
10000000c0ffee02,gw-image-02,plant-a,mqtts://broker.example.com:8883
"""


def shell_scripts() -> list[tuple[Path, str | None]]:
    """Every shell script under image/: (path, shell to lint it as, or None for its shebang)."""
    found: list[tuple[Path, str | None]] = []
    for path in sorted(IMAGE.rglob("*")):
        if not path.is_file():
            continue
        first = path.read_bytes()[:64].split(b"\n", 1)[0]
        if first.startswith(b"#!") and b"sh" in first:
            found.append((path, None))
        elif path.suffix == ".sh":
            found.append((path, "sh"))
        elif path.name in ("config", "EXPORT_IMAGE"):  # pi-gen sources these with bash
            found.append((path, "bash"))
    return found


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (./dev test installs it)"
    scripts = shell_scripts()
    names = {p.relative_to(IMAGE).as_posix() for p, _ in scripts}
    assert {
        "install.sh",
        "build.sh",
        "make-data-partition.sh",
        "files/cgw-firstboot",
        "pi-gen/config",
        "pi-gen/stage-cgw/prerun.sh",
        "pi-gen/stage-cgw/EXPORT_IMAGE",
        "pi-gen/stage-cgw/00-install/00-run.sh",
    } <= names
    findings = []
    for path, shell in scripts:
        argv = [shellcheck, "--severity=style", "--external-sources"]
        if shell:
            argv.append(f"--shell={shell}")
        done = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            findings.append(done.stdout + done.stderr)
    assert not findings, "\n".join(findings)


def test_scripts_the_image_runs_are_executable() -> None:
    for name in (
        "install.sh",
        "build.sh",
        "make-data-partition.sh",
        "files/cgw-firstboot",
        "pi-gen/stage-cgw/prerun.sh",
        "pi-gen/stage-cgw/00-install/00-run.sh",
    ):
        assert os.access(IMAGE / name, os.X_OK), f"image/{name} is not executable"


# --- install.sh against a directory tree --------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root: its kind, mode and content (a symlink: its target)."""
    tree: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            key = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                tree[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                tree[key] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                tree[key] = ("file", stat.S_IMODE(st.st_mode), digest)
    return tree


def pi_gen_like_tree(root: Path) -> None:
    """The few files of a Raspberry Pi OS Lite root filesystem that install.sh edits."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/fstab").write_text(PI_GEN_FSTAB)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\ngpio:x:997:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text(CONFIG_TXT)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/NetworkManager").write_bytes(b"")


def install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [
            "sh",
            str(IMAGE / "install.sh"),
            "--root",
            str(root),
            "--wheel",
            str(wheel),
            "--python",
            sys.executable,
            "--unit",
            str(UNIT),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("cgw-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Path]:
    """A tree with install.sh run once, and the snapshot taken right after; tests copy it."""
    assert UNIT.is_file(), f"{UNIT} is missing: install.sh installs the repository's unit"
    root = tmp_path_factory.mktemp("rootfs")
    pi_gen_like_tree(root)
    install(root, wheel)
    yield root


def fstab_entries(root: Path) -> dict[str, list[str]]:
    entries = {}
    for line in (root / "etc/fstab").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            entries[fields[1]] = fields
    return entries


def test_gateway_has_its_own_venv_that_runs(installed: Path) -> None:
    venv = installed / VENV
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    # The scripts name the venv where it is on the device, not this temporary tree.
    cgw = venv / "bin/cgw"
    assert cgw.read_text().splitlines()[0] == "#!/opt/cgw/venv/bin/python"
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            assert str(installed) not in path.read_text(errors="replace"), path
    # Every module is byte-compiled ahead (the root is read-only), hash-checked, device paths.
    module = venv / "lib/python3.11/site-packages/gateway/__pycache__/cli.cpython-311.pyc"
    assert int.from_bytes(module.read_bytes()[4:8], "little") == 0b11  # checked hash
    assert b"/opt/cgw/venv/lib/python3.11/site-packages/gateway/cli.py" in module.read_bytes()
    # The entry point works with the venv's own interpreter and its own dependencies.
    done = subprocess.run(
        [str(venv / "bin/python"), str(cgw), "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cgw {__version__}"
    deps = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import paho.mqtt, pymodbus, cryptography, orjson, serial",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert deps.returncode == 0, deps.stderr
    assert (installed / "opt/cgw/share/doc/cgw/README.md").is_file()


def test_units_installed_and_enabled(installed: Path) -> None:
    system = installed / "etc/systemd/system"
    assert (system / "cgw.service").read_bytes() == UNIT.read_bytes()
    assert (system / "cgw-firstboot.service").read_bytes() == (
        IMAGE / "files/cgw-firstboot.service"
    ).read_bytes()
    for unit in ("cgw.service", "cgw-firstboot.service"):
        link = system / "multi-user.target.wants" / unit
        assert link.is_symlink() and os.readlink(link) == f"/etc/systemd/system/{unit}"
    dropin = (system / "cgw.service.d/cgw-image.conf").read_text()
    assert "ConditionPathExists=/etc/cgw/gateway.toml" in dropin
    assert "RequiresMountsFor=/var/lib/cgw" in dropin
    script = installed / "usr/local/sbin/cgw-firstboot"
    assert os.access(script, os.X_OK)
    for unit in ("dphys-swapfile.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        assert os.readlink(system / unit) == "/dev/null", f"{unit} is not masked"


def test_firstboot_unit_passes_systemd_analyze(installed: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (./dev test installs systemd)"
    # verify checks that ExecStart= exists on this machine: point it at the tree's copy.
    text = (IMAGE / "files/cgw-firstboot.service").read_text()
    text = text.replace(
        "ExecStart=/usr/local/sbin/cgw-firstboot",
        f"ExecStart={installed}/usr/local/sbin/cgw-firstboot",
    )
    unit = tmp_path / "cgw-firstboot.service"
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_hardware_watchdog_enabled(installed: Path) -> None:
    lines = (installed / "boot/firmware/config.txt").read_text().splitlines()
    assert lines.count("dtparam=watchdog=on") == 1
    assert lines[: len(CONFIG_TXT.splitlines())] == CONFIG_TXT.splitlines()  # kept as it was
    # It applies to every board: the last section before it is [all].
    before = lines[: lines.index("dtparam=watchdog=on")]
    assert [line for line in before if line.startswith("[")][-1] == "[all]"
    conf = (installed / "etc/systemd/system.conf.d/cgw-watchdog.conf").read_text()
    assert "[Manager]" in conf
    assert "RuntimeWatchdogSec=15s" in conf.splitlines()
    assert "RebootWatchdogSec=2min" in conf.splitlines()


def test_read_only_root_and_data_partition(installed: Path) -> None:
    entries = fstab_entries(installed)
    root = entries["/"]
    assert root[0] == "ROOTDEV"  # pi-gen's placeholder, filled in at export
    assert "ro" in root[3].split(",") and "rw" not in root[3].split(",")
    assert "ro" in entries["/boot/firmware"][3].split(",")
    data = entries["/var/lib/cgw"]
    assert data[0] == "LABEL=cgw-data" and data[2] == "ext4"
    options = data[3].split(",")
    assert "noatime" in options and any(o.startswith("commit=") for o in options)
    for mountpoint in ("/tmp", "/var/tmp", "/var/log", "/var/lib/NetworkManager"):
        assert entries[mountpoint][2] == "tmpfs", mountpoint
    for mountpoint in entries:
        if mountpoint not in ("/", "/proc"):
            assert (installed / mountpoint.lstrip("/")).is_dir(), f"no mount point {mountpoint}"
    journald = (installed / "etc/systemd/journald.conf.d/cgw-journald.conf").read_text()
    assert "Storage=volatile" in journald.splitlines()
    assert os.readlink(installed / "etc/resolv.conf") == "/run/NetworkManager/resolv.conf"
    # Each device makes its own machine id at first boot.
    assert (installed / "etc/machine-id").read_bytes() == b""
    assert os.readlink(installed / "var/lib/dbus/machine-id") == "/etc/machine-id"


def test_second_run_leaves_the_same_tree(installed: Path, wheel: Path, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    shutil.copytree(installed, root, symlinks=True)
    before = snapshot(root)
    done = install(root, wheel)
    assert "already has" in done.stdout
    assert snapshot(root) == before


def test_bare_tree_gets_an_fstab(installed: Path, wheel: Path, tmp_path: Path) -> None:
    """No fstab, no config.txt: install.sh writes them (pi-gen's labels bootfs and rootfs)."""
    root = tmp_path / "rootfs"
    root.mkdir()
    shutil.copytree(installed / "opt", root / "opt", symlinks=True)  # the venv step is done
    install(root, wheel)
    entries = fstab_entries(root)
    assert entries["/"][0] == "LABEL=rootfs" and "ro" in entries["/"][3].split(",")
    assert entries["/boot/firmware"][0] == "LABEL=bootfs"
    assert "/var/lib/NetworkManager" not in entries  # no NetworkManager in this tree
    assert (root / "boot/firmware/config.txt").read_text().count("dtparam=watchdog=on") == 1
    before = snapshot(root)
    install(root, wheel)
    assert snapshot(root) == before


# --- the data partition ------------------------------------------------------------------------


def test_make_data_partition_appends_cgw_data(tmp_path: Path) -> None:
    sfdisk = shutil.which("sfdisk")
    assert sfdisk, "sfdisk is not installed (Debian package fdisk)"
    image = tmp_path / "pi.img"
    with image.open("wb") as f:
        f.truncate(24 * 1024 * 1024)
    layout = "label: dos\nstart=8192, size=16384, type=c\nstart=24576, size=16384, type=83\n"
    subprocess.run([sfdisk, "-q", str(image)], input=layout, text=True, check=True)
    copy = tmp_path / "copy.img"
    shutil.copy(image, copy)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    for path in (image, copy):
        subprocess.run(
            ["sh", str(IMAGE / "make-data-partition.sh"), str(path), "16"], env=env, check=True
        )
    table = subprocess.run(
        [sfdisk, "--dump", str(image)], capture_output=True, text=True, check=True
    ).stdout
    assert f"{image}3 : start=       40960, size=       32768, type=83" in table
    # The same image and SOURCE_DATE_EPOCH give the same bytes.
    assert hashlib.sha256(image.read_bytes()).digest() == hashlib.sha256(copy.read_bytes()).digest()
    part = tmp_path / "part.ext4"
    with image.open("rb") as src:
        src.seek(40960 * 512)
        part.write_bytes(src.read(32768 * 512))
    header = subprocess.run(
        ["dumpe2fs", "-h", str(part)], capture_output=True, text=True, check=True
    ).stdout
    assert "Filesystem volume name:   cgw-data" in header
    assert "has_journal" in header
    # Run again: the partition is there already, nothing changes.
    before = image.read_bytes()
    again = subprocess.run(
        ["sh", str(IMAGE / "make-data-partition.sh"), str(image), "16"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "already has" in again.stdout
    assert image.read_bytes() == before


# --- first boot ------------------------------------------------------------------------------


def firstboot(root: Path, serial: str = SERIAL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(root / "usr/local/sbin/cgw-firstboot")],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CGW_ROOT": str(root),
            "CGW_SERIAL": serial,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def device(installed: Path, tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    shutil.copytree(installed, root, symlinks=True)
    return root


def test_firstboot_without_inventory_does_nothing(device: Path) -> None:
    before = snapshot(device)
    done = firstboot(device)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to provision" in done.stdout
    assert snapshot(device) == before


def test_firstboot_provisions_from_the_boot_partition(device: Path) -> None:
    from buffer.keys import public_key_text
    from gateway.web.auth import hash_password
    from tests.support.keys import make_signer

    boot = device / "boot/firmware/cgw"
    (boot / "inventory.csv").write_text(INVENTORY)
    (boot / "platform.pub").write_text(public_key_text(make_signer(boot.parent).public) + "\n")
    (boot / "web.password").write_text(hash_password("site-password") + "\n")
    done = firstboot(device)
    out = boot / "out"
    assert done.returncode == 0, done.stdout + done.stderr
    # What provisioning printed is in the journal (stdout) and on the boot partition.
    log = (out / "provision.log").read_text()
    assert "gw-image-01" in log and log in done.stdout
    assert (out / "result").read_text().startswith("ok ")
    assert (out / "client.csr").read_bytes() == (device / "etc/cgw/tls/client.csr").read_bytes()
    assert b"BEGIN CERTIFICATE REQUEST" in (out / "client.csr").read_bytes()
    assert (out / "signing.pub").read_bytes() == (device / "var/lib/cgw/signing.pub").read_bytes()
    assert (device / "etc/cgw/gateway.toml").is_file()
    installed = tomllib.loads((device / "etc/cgw/gateway.toml").read_text())
    assert installed["commands"]["platform_key_file"] == "/etc/cgw/platform.pub"
    assert installed["web"]["password_file"] == "/etc/cgw/web.password"
    assert (device / "etc/cgw/firstboot.done").is_file()
    assert "cgw:" in (device / "etc/passwd").read_text()
    link = device / "etc/systemd/system/multi-user.target.wants/cgw.service"
    assert os.readlink(link) == "/etc/systemd/system/cgw.service"

    # Once done, it does not run again...
    config = (device / "etc/cgw/gateway.toml").read_bytes()
    state = snapshot(device)
    again = firstboot(device)
    assert again.returncode == 0 and "already provisioned" in again.stdout
    assert snapshot(device) == state
    # ...unless IT asks for it; provisioning is idempotent, the result is the same device.
    (boot / "reprovision").write_bytes(b"")
    redo = firstboot(device)
    assert redo.returncode == 0, redo.stdout + redo.stderr
    assert not (boot / "reprovision").exists()
    assert (out / "result").read_text().startswith("ok ")
    assert (device / "etc/cgw/tls/client.csr").read_bytes() == (out / "client.csr").read_bytes()
    assert (device / "etc/cgw/gateway.toml").read_bytes() == config


def test_firstboot_failure_is_reported_and_retried(device: Path) -> None:
    boot = device / "boot/firmware/cgw"
    (boot / "inventory.csv").write_text(INVENTORY)
    done = firstboot(device, serial="10000000deadbeef")  # not in the inventory
    assert done.returncode == 3, done.stdout + done.stderr
    result = (boot / "out/result").read_text()
    assert result.startswith("failed (exit status 3)")
    assert "10000000deadbeef" in (boot / "out/provision.log").read_text()
    assert not (device / "etc/cgw/firstboot.done").exists()  # runs again at the next boot
