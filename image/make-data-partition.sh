#!/bin/sh
# Append the data partition to an exported Raspberry Pi OS image (pi-gen makes only the boot and
# root partitions).
#
#   make-data-partition.sh IMAGE.img [SIZE_MIB]
#
# Adds partition 3: ext4, label cgw-data, SIZE_MIB (default 256) MiB, starting on a 4 MiB
# boundary after the root partition. The gateway mounts it on /var/lib/cgw (its buffer) and grows
# it to the end of the card at first boot (cgw-firstboot). The image file is extended; nothing
# else in it changes. It needs sfdisk (util-linux) and mkfs.ext4 (e2fsprogs), but neither root
# nor loop devices. An image that already has the data partition is left alone.
#
# Reproducible: with SOURCE_DATE_EPOCH set, the file system's UUID, hash seed and times derive
# from it, so the same image and epoch give the same bytes.
set -eu

LABEL=cgw-data
ALIGN=8192 # sectors of 512 bytes: 4 MiB

usage() {
    echo "usage: $0 IMAGE.img [SIZE_MIB]" >&2
    exit 2
}

die() {
    echo "make-data-partition.sh: $*" >&2
    exit 1
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
IMAGE=$1
SIZE_MIB=${2:-256}
[ -f "$IMAGE" ] || die "no such image: $IMAGE"
case "$SIZE_MIB" in '' | *[!0-9]*) die "SIZE_MIB must be a whole number: $SIZE_MIB" ;; esac
[ "$SIZE_MIB" -ge 8 ] || die "SIZE_MIB must be at least 8"
for tool in sfdisk mkfs.ext4; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (apt-get install fdisk e2fsprogs)"
done

# "IMAGE3 : start=     1056768, size=      524288, type=83" -> "3 1056768 524288 83"
table=$(sfdisk --dump "$IMAGE" | sed -n 's/^[^:]*[^0-9]\([0-9][0-9]*\) *: *start= *\([0-9]*\), *size= *\([0-9]*\), *type= *\([0-9a-fA-F]*\).*/\1 \2 \3 \4/p')
[ -n "$table" ] || die "$IMAGE has no partition table"
count=$(printf '%s\n' "$table" | wc -l)
if [ "$count" -ge 3 ]; then
    third_start=$(printf '%s\n' "$table" | awk '$1 == 3 { print $2 }')
    if [ -n "$third_start" ]; then
        # The ext4 superblock starts 1024 bytes in; its volume name is at byte 120 of it.
        if dd if="$IMAGE" bs=512 skip="$((third_start + 2))" count=1 status=none |
            cut -b 121-136 | tr -d '\0' | grep -qx "$LABEL"; then
            echo "make-data-partition.sh: $IMAGE already has the $LABEL partition"
            exit 0
        fi
    fi
    die "$IMAGE already has $count partitions: expected pi-gen's two (boot, root)"
fi
[ "$count" -eq 2 ] || die "$IMAGE has $count partitions: expected pi-gen's two (boot, root)"

# shellcheck disable=SC2046 # the fields of the last line, on purpose
set -- $(printf '%s\n' "$table" | tail -n 1)
root_end=$(($2 + $3))
start=$(((root_end + ALIGN - 1) / ALIGN * ALIGN))
sectors=$((SIZE_MIB * 2048))
total=$(((start + sectors) * 512))

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

set -- -q -F -t ext4 -L "$LABEL" -m 1
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    seed=$(printf 'cgw-data %s' "$SOURCE_DATE_EPOCH" | sha256sum | cut -c1-32)
    uuid=$(echo "$seed" | sed 's/\(.\{8\}\)\(.\{4\}\)\(.\{4\}\)\(.\{4\}\)\(.\{12\}\)/\1-\2-\3-\4-\5/')
    set -- "$@" -U "$uuid" -E "hash_seed=$uuid,lazy_itable_init=0,lazy_journal_init=0"
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
    export E2FSPROGS_FAKE_TIME
else
    set -- "$@" -E lazy_itable_init=0,lazy_journal_init=0
fi
truncate -s "$((sectors * 512))" "$work/data.ext4"
mkfs.ext4 "$@" "$work/data.ext4"

truncate -s "$total" "$IMAGE"
echo "start=$start, size=$sectors, type=83" |
    sfdisk --quiet --append --no-reread --no-tell-kernel "$IMAGE"
dd if="$work/data.ext4" of="$IMAGE" bs=1M seek="$((start / 2048))" conv=notrunc,sparse status=none
echo "make-data-partition.sh: $IMAGE: partition 3 ($LABEL), ${SIZE_MIB} MiB at sector $start"
