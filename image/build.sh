#!/bin/sh
# Build the cgw gateway image: Raspberry Pi OS Lite (Debian bookworm, arm64) with cgw baked in.
#
#   sudo CGW_ADMIN_PASSWORD=... CGW_ADMIN_PUBKEY="$(cat ~/.ssh/id_ed25519.pub)" image/build.sh [WORKDIR]
#
# Needs root, git, network (pi-gen downloads Debian and Raspberry Pi packages, pip the gateway's
# dependencies) and pi-gen's own dependencies (see its README: debootstrap, qemu-user-static,
# binfmt-support, ...). Writes WORKDIR (default: build/image in this repository) and leaves
#   WORKDIR/deploy/<date>-cgw-gateway-cgw.img.xz  and its .sha256
# See docs/IMAGE.md.
#
# Environment (all optional except the two CGW_ADMIN_*):
#   CGW_ADMIN_PASSWORD   password of the admin account cgwadmin (console; SSH takes keys only)
#   CGW_ADMIN_PUBKEY     authorized_keys line(s) for cgwadmin
#   PI_GEN_REF           pi-gen tag to build with (default below: a bookworm arm64 release)
#   PI_GEN_COMMIT        the commit PI_GEN_REF must resolve to (checked when given)
#   PI_GEN_REPO          where to clone pi-gen from
#   PI_GEN_DOCKER=1      build with pi-gen's build-docker.sh instead of build.sh
#   CGW_WHEEL            a cgw wheel to install (default: built from this checkout)
#   CGW_CONSTRAINTS      a pip constraints file pinning the dependencies (reproducible builds)
#   CGW_DATA_MIB         initial size of the data partition (default 256; it grows at first boot)
#   SOURCE_DATE_EPOCH    default: the time of this checkout's last commit
set -eu

PI_GEN_REF=${PI_GEN_REF:-2024-10-22-raspios-bookworm-arm64}
PI_GEN_REPO=${PI_GEN_REPO:-https://github.com/RPi-Distro/pi-gen.git}
CGW_DATA_MIB=${CGW_DATA_MIB:-256}

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$REPO/build/image}

die() {
    echo "build.sh: $*" >&2
    exit 1
}

# 'quoted VALUE' prints VALUE in single quotes for a shell file.
quoted() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

[ "$(id -u)" -eq 0 ] || die "pi-gen must run as root (sudo)"
[ -n "${CGW_ADMIN_PASSWORD:-}" ] || die "set CGW_ADMIN_PASSWORD (the admin account's password)"
[ -n "${CGW_ADMIN_PUBKEY:-}" ] || die "set CGW_ADMIN_PUBKEY (authorized_keys line for cgwadmin)"
command -v git >/dev/null 2>&1 || die "git is needed"
[ -f "$REPO/systemd/cgw.service" ] || die "no $REPO/systemd/cgw.service"
[ -z "${CGW_CONSTRAINTS:-}" ] || [ -f "$CGW_CONSTRAINTS" ] || die "no such file: $CGW_CONSTRAINTS"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

# 1. The wheel: given, or built from this checkout (its zip times come from SOURCE_DATE_EPOCH).
if [ -n "${CGW_WHEEL:-}" ]; then
    [ -f "$CGW_WHEEL" ] || die "no such wheel: $CGW_WHEEL"
    WHEEL=$CGW_WHEEL
else
    rm -rf "$WORK/wheel"
    python3 -m pip wheel --no-deps -q -w "$WORK/wheel" "$REPO"
    WHEEL=$(ls "$WORK"/wheel/cgw-*.whl)
fi
echo "build.sh: cgw wheel $(basename "$WHEEL") $(sha256sum <"$WHEEL" | cut -d' ' -f1)"

# 2. pi-gen at the pinned tag.
if [ ! -d "$WORK/pi-gen/.git" ]; then
    git clone --quiet --depth 1 --branch "$PI_GEN_REF" "$PI_GEN_REPO" "$WORK/pi-gen"
else
    git -C "$WORK/pi-gen" fetch --quiet --depth 1 origin "refs/tags/$PI_GEN_REF:refs/tags/$PI_GEN_REF"
    git -C "$WORK/pi-gen" checkout --quiet --force "refs/tags/$PI_GEN_REF"
fi
commit=$(git -C "$WORK/pi-gen" rev-parse HEAD)
if [ -n "${PI_GEN_COMMIT:-}" ] && [ "$commit" != "$PI_GEN_COMMIT" ]; then
    die "pi-gen $PI_GEN_REF is $commit, not the expected $PI_GEN_COMMIT"
fi
echo "build.sh: pi-gen $PI_GEN_REF $commit"

# 3. The stage: stage-cgw with install.sh, its files, the unit, the wheel and the constraints.
stage="$WORK/pi-gen/stage-cgw"
rm -rf "$stage"
cp -R "$REPO/image/pi-gen/stage-cgw" "$stage"
payload="$stage/00-install/files/cgw-image"
mkdir -p "$payload"
cp "$REPO/image/install.sh" "$payload/"
cp -R "$REPO/image/files" "$payload/files"
cp "$REPO/systemd/cgw.service" "$payload/cgw.service"
cp "$WHEEL" "$payload/"
[ -z "${CGW_CONSTRAINTS:-}" ] || cp "$CGW_CONSTRAINTS" "$payload/constraints.txt"
mkdir -p "$payload/doc"
cp "$REPO/README.md" "$payload/doc/"
cp -R "$REPO/docs" "$payload/doc/docs"
# Only stage-cgw is exported, not the plain Lite image of stage 2.
touch "$WORK/pi-gen/stage2/SKIP_IMAGES"
rm -f "$WORK/pi-gen/stage2/EXPORT_NOOBS"

IMG_DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
{
    cat "$REPO/image/pi-gen/config"
    echo "IMG_DATE=$IMG_DATE"
    echo "FIRST_USER_PASS=$(quoted "$CGW_ADMIN_PASSWORD")"
    echo "PUBKEY_SSH_FIRST_USER=$(quoted "$CGW_ADMIN_PUBKEY")"
} >"$WORK/pi-gen/config"
chmod 0600 "$WORK/pi-gen/config"

# 4. Build. pi-gen writes deploy/<IMG_DATE>-cgw-gateway-cgw.img (DEPLOY_COMPRESSION=none)
rm -rf "$WORK/pi-gen/deploy"
if [ "${PI_GEN_DOCKER:-0}" = 1 ]; then
    (cd "$WORK/pi-gen" && ./build-docker.sh)
else
    (cd "$WORK/pi-gen" && SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH ./build.sh)
fi
image=""
for made in "$WORK"/pi-gen/deploy/*-cgw.img; do
    [ -z "$image" ] || die "pi-gen made more than one image: $image, $made"
    image=$made
done
[ -f "$image" ] || die "pi-gen made no image (*-cgw.img) in $WORK/pi-gen/deploy"

# 5. The data partition, then the deliverable.
sh "$REPO/image/make-data-partition.sh" "$image" "$CGW_DATA_MIB"
mkdir -p "$WORK/deploy"
out="$WORK/deploy/$(basename "$image").xz"
xz -T0 -6 -c "$image" >"$out"
(cd "$WORK/deploy" && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
echo "build.sh: $out"
cat "$out.sha256"
