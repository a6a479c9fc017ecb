#!/bin/sh
# Install cgw into a Raspberry Pi OS root filesystem: the steps the image build runs.
#
#   install.sh --root DIR --wheel PATH [--python PYTHON] [--unit PATH] [--constraints FILE]
#              [--doc-dir DIR]
#
# The image build (image/pi-gen/stage-cgw) runs it inside the image's chroot with --root /; the
# tests run the same script against a directory tree. Every step writes below DIR only, and running
# it twice leaves the same tree. See docs/IMAGE.md.
#
#   --root DIR          the root filesystem to install into
#   --wheel PATH        the cgw wheel (built from this repository: pip wheel --no-deps .)
#   --python PYTHON     the interpreter the venv is made from (default: python3); it must be the
#                       one the device runs, /usr/bin/python3 inside the image's chroot
#   --unit PATH         the gateway's unit file (default: systemd/cgw.service beside image/)
#   --constraints FILE  pip constraints pinning the dependencies' versions (reproducible builds)
#   --doc-dir DIR       where README.md and docs/*.md are (default: the repository), installed in
#                       /opt/cgw/share/doc/cgw (cgw.service's Documentation=)
#
# Environment: SOURCE_DATE_EPOCH (byte-compiled files are then hash-checked, hence identical from
# build to build), and pip's own PIP_* variables (index, cache).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
FILES="$HERE/files"
VENV_PATH=/opt/cgw/venv

ROOT=""
WHEEL=""
PYTHON=python3
UNIT="$HERE/../systemd/cgw.service"
CONSTRAINTS=""
DOCS="$HERE/.."

usage() {
    echo "usage: $0 --root DIR --wheel PATH [--python PYTHON] [--unit PATH] [--constraints FILE]" \
        "[--doc-dir DIR]" >&2
    exit 2
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

log() {
    echo "install.sh: $*"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --root) [ $# -ge 2 ] || usage; ROOT=$2; shift 2 ;;
    --wheel) [ $# -ge 2 ] || usage; WHEEL=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || usage; PYTHON=$2; shift 2 ;;
    --unit) [ $# -ge 2 ] || usage; UNIT=$2; shift 2 ;;
    --constraints) [ $# -ge 2 ] || usage; CONSTRAINTS=$2; shift 2 ;;
    --doc-dir) [ $# -ge 2 ] || usage; DOCS=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage ;;
    esac
done
if [ -z "$ROOT" ] || [ -z "$WHEEL" ]; then usage; fi
[ -d "$ROOT" ] || die "no such directory: $ROOT"
[ -f "$WHEEL" ] || die "no such wheel: $WHEEL"
[ -f "$UNIT" ] || die "no unit file at $UNIT (the repository's systemd/cgw.service)"
[ -z "$CONSTRAINTS" ] || [ -f "$CONSTRAINTS" ] || die "no such constraints file: $CONSTRAINTS"

ROOT=$(cd "$ROOT" && pwd)
[ "$ROOT" = / ] && R="" || R=$ROOT
WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
# Only the presence of SOURCE_DATE_EPOCH matters to py_compile: it then writes hash-checked .pyc
# files, which do not depend on the source files' modification times.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
export SOURCE_DATE_EPOCH
umask 022

# --- helpers ---------------------------------------------------------------------------------

# install_file SRC DEST MODE: copy SRC to $R/DEST unless it is already identical.
install_file() {
    if ! cmp -s "$1" "$R$2" 2>/dev/null; then
        mkdir -p "$(dirname "$R$2")"
        cp "$1" "$R$2.cgw-new"
        mv -f "$R$2.cgw-new" "$R$2"
    fi
    chmod "$3" "$R$2"
}

# link TARGET LINK: make $R/LINK a symlink to TARGET (an absolute path as seen on the device).
link() {
    mkdir -p "$(dirname "$R$2")"
    if [ "$(readlink "$R$2" 2>/dev/null)" != "$1" ]; then
        rm -rf "$R$2"
        ln -s "$1" "$R$2"
    fi
}

# replace_if_changed NEW FILE: move NEW over FILE if they differ, else drop NEW.
replace_if_changed() {
    if cmp -s "$1" "$2"; then
        rm -f "$1"
    else
        mv -f "$1" "$2"
    fi
}

# managed_block FILE NAME CONTENT: (re)write the block between '# cgw-image: NAME begin' and
# '# cgw-image: NAME end' at the end of FILE, keeping everything else as it is.
managed_block() {
    file=$1
    begin="# cgw-image: $2 begin (written by cgw's image/install.sh)"
    end="# cgw-image: $2 end"
    mkdir -p "$(dirname "$file")"
    [ -f "$file" ] || : >"$file"
    awk -v b="# cgw-image: $2 begin" -v e="$end" '
        index($0, b) == 1 { skip = 1; next }
        skip && $0 == e { skip = 0; next }
        !skip { print }
    ' "$file" >"$file.cgw-new"
    {
        printf '%s\n' "$begin"
        printf '%s\n' "$3"
        printf '%s\n' "$end"
    } >>"$file.cgw-new"
    replace_if_changed "$file.cgw-new" "$file"
}

# enable_unit UNIT: the symlinks 'systemctl enable' makes for each WantedBy= of the installed unit.
enable_unit() {
    targets=$(sed -n 's/^[[:space:]]*WantedBy=//p' "$R/etc/systemd/system/$1")
    [ -n "$targets" ] || die "$1 has no WantedBy= in its [Install] section"
    for target in $targets; do
        link "/etc/systemd/system/$1" "/etc/systemd/system/$target.wants/$1"
    done
}

# mask UNIT: what 'systemctl mask' does.
mask() {
    link /dev/null "/etc/systemd/system/$1"
}

# --- 1. the gateway in its own virtual environment ----------------------------------------------

install_venv() {
    stamp="$R/opt/cgw/installed-wheel"
    want="$(basename "$WHEEL") $(sha256sum <"$WHEEL" | cut -d' ' -f1)"
    if [ -n "$CONSTRAINTS" ]; then
        want="$want constraints=$(sha256sum <"$CONSTRAINTS" | cut -d' ' -f1)"
    fi
    want="$want python=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$R$VENV_PATH/bin/python" ]; then
        log "venv $VENV_PATH already has $(basename "$WHEEL")"
        return 0
    fi
    log "creating venv $VENV_PATH with $(basename "$WHEEL")"
    rm -rf "$R$VENV_PATH" "$stamp"
    mkdir -p "$R/opt/cgw"
    "$PYTHON" -m venv "$R$VENV_PATH"
    set -- --disable-pip-version-check --no-input --no-warn-script-location --no-compile
    [ -z "$CONSTRAINTS" ] || set -- "$@" --constraint "$CONSTRAINTS"
    "$R$VENV_PATH/bin/python" -m pip install -q "$@" "$WHEEL"
    # The root filesystem is read-only on the device: Python cannot write bytecode there, so it
    # is all compiled now. Hash-checked .pyc files do not depend on the files' times, and the
    # source paths recorded in them (tracebacks) are the device's, whatever --root is.
    set -- -q -f -j 0 --invalidation-mode checked-hash
    [ -z "$R" ] || set -- "$@" -s "$R" -p /
    "$R$VENV_PATH/bin/python" -m compileall "$@" "$R$VENV_PATH/lib" >/dev/null
    # With --root other than /, pip wrote the venv's temporary location into the scripts'
    # shebangs, activate and pyvenv.cfg: make them name where the venv lives on the device.
    if [ -n "$R" ]; then
        for f in "$R$VENV_PATH"/bin/* "$R$VENV_PATH/pyvenv.cfg"; do
            if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
            grep -Iq . "$f" 2>/dev/null || continue
            grep -qF "$R$VENV_PATH" "$f" || continue
            awk -v old="$R$VENV_PATH" -v new="$VENV_PATH" '{
                out = ""
                while ((i = index($0, old)) > 0) {
                    out = out substr($0, 1, i - 1) new
                    $0 = substr($0, i + length(old))
                }
                print out $0
            }' "$f" >"$f.cgw-new"
            chmod "$(stat -c %a "$f")" "$f.cgw-new"
            mv -f "$f.cgw-new" "$f"
        done
    fi
    printf '%s\n' "$want" >"$stamp"
}

install_docs() {
    doc=/opt/cgw/share/doc/cgw
    rm -rf "$R$doc"
    [ ! -f "$DOCS/README.md" ] || install_file "$DOCS/README.md" "$doc/README.md" 0644
    for f in "$DOCS"/docs/*.md; do
        [ ! -f "$f" ] || install_file "$f" "$doc/docs/${f##*/}" 0644
    done
}

# --- 2. units: the gateway and the first-boot provisioning ----------------------------------------

install_units() {
    log "installing cgw.service and cgw-firstboot.service"
    install_file "$UNIT" /etc/systemd/system/cgw.service 0644
    install_file "$FILES/cgw-image.conf" /etc/systemd/system/cgw.service.d/cgw-image.conf 0644
    install_file "$FILES/cgw-firstboot.service" /etc/systemd/system/cgw-firstboot.service 0644
    install_file "$FILES/cgw-firstboot" /usr/local/sbin/cgw-firstboot 0755
    install_file "$FILES/boot-README.txt" /boot/firmware/cgw/README.txt 0644
    enable_unit cgw.service
    enable_unit cgw-firstboot.service
}

# --- 3. hardware watchdog ---------------------------------------------------------------------------

install_watchdog() {
    log "enabling the hardware watchdog"
    managed_block "$R/boot/firmware/config.txt" watchdog "[all]
dtparam=watchdog=on"
    install_file "$FILES/cgw-watchdog.conf" /etc/systemd/system.conf.d/cgw-watchdog.conf 0644
}

# --- 4. read-only root, writable data partition --------------------------------------------------

# Marks the / and /boot/firmware lines of fstab read-only (keeping their device fields: pi-gen
# fills in the PARTUUIDs when it exports the image).
readonly_fstab() {
    fstab="$R/etc/fstab"
    if ! awk '$1 !~ /^#/ && $2 == "/" { found = 1 } END { exit !found }' "$fstab" 2>/dev/null; then
        # No root line (a bare tree): the labels pi-gen gives its partitions.
        {
            [ ! -f "$fstab" ] || cat "$fstab"
            echo "proc            /proc           proc    defaults          0       0"
            echo "LABEL=bootfs    /boot/firmware  vfat    defaults          0       2"
            echo "LABEL=rootfs    /               ext4    defaults,noatime  0       1"
        } >"$fstab.cgw-new"
        mv -f "$fstab.cgw-new" "$fstab"
    fi
    awk 'BEGIN { OFS = "  " }
        $1 !~ /^#/ && ($2 == "/" || $2 == "/boot/firmware") && NF >= 4 {
            n = split($4, opt, ",")
            out = ""
            seen = 0
            for (i = 1; i <= n; i++) {
                if (opt[i] == "rw" || opt[i] == "ro") { if (seen) continue; opt[i] = "ro"; seen = 1 }
                out = out (out == "" ? "" : ",") opt[i]
            }
            if (!seen) out = out ",ro"
            if (out != $4) { $4 = out }
        }
        { print }' "$fstab" >"$fstab.cgw-new"
    replace_if_changed "$fstab.cgw-new" "$fstab"
}

install_readonly_root() {
    log "read-only root, data partition LABEL=cgw-data on /var/lib/cgw"
    readonly_fstab
    nm=""
    if [ -e "$R/usr/sbin/NetworkManager" ]; then
        nm="tmpfs           /var/lib/NetworkManager tmpfs nosuid,nodev,noexec,mode=0755,size=4m 0 0"
    fi
    managed_block "$R/etc/fstab" mounts "LABEL=cgw-data  /var/lib/cgw    ext4    defaults,noatime,commit=60,nofail,x-systemd.device-timeout=30s  0  2
tmpfs           /tmp            tmpfs   nosuid,nodev,mode=1777,size=64m   0  0
tmpfs           /var/tmp        tmpfs   nosuid,nodev,mode=1777,size=16m   0  0
tmpfs           /var/log        tmpfs   nosuid,nodev,noexec,mode=0755,size=32m  0  0
tmpfs           /var/lib/systemd/timesync tmpfs nosuid,nodev,noexec,mode=0755,size=1m 0 0${nm:+
$nm}"
    for dir in /var/lib/cgw /tmp /var/tmp /var/log /var/lib/systemd/timesync; do
        mkdir -p "$R$dir"
    done
    chmod 1777 "$R/tmp" "$R/var/tmp"
    # The journal stays in RAM (/run/log/journal): the data partition holds the buffer only.
    install_file "$FILES/cgw-journald.conf" /etc/systemd/journald.conf.d/cgw-journald.conf 0644
    if [ -n "$nm" ]; then
        mkdir -p "$R/var/lib/NetworkManager"
        # NetworkManager leaves a symlinked resolv.conf alone and keeps its own in /run.
        link /run/NetworkManager/resolv.conf /etc/resolv.conf
    fi
    # Units that write to the root filesystem, or swap onto it, have no place on the appliance.
    for unit in dphys-swapfile.service apt-daily.timer apt-daily-upgrade.timer man-db.timer \
        logrotate.timer; do
        mask "$unit"
    done
    # Each device makes its own machine id on its first boot; cgw-firstboot commits it to the
    # root filesystem (without that a read-only root would get a new one at every boot).
    mkdir -p "$R/etc"
    if [ ! -f "$R/etc/machine-id" ] || [ -s "$R/etc/machine-id" ]; then
        : >"$R/etc/machine-id"
    fi
    chmod 0444 "$R/etc/machine-id"
    if [ -d "$R/var/lib/dbus" ]; then
        link /etc/machine-id /var/lib/dbus/machine-id
    fi
}

install_venv
install_docs
install_units
install_watchdog
install_readonly_root
log "done: $ROOT"
