#!/bin/bash -e
# pi-gen stage-cgw/00-install: runs image/install.sh inside the image's chroot (--root /), with the
# image's own Python 3.11 (arm64, under qemu-user-static on an x86 build host).
# image/build.sh put install.sh, its files, the repository's systemd/cgw.service, the cgw wheel,
# the documents (doc/) and the optional pip constraints in files/cgw-image/.

SRC=files/cgw-image
DEST=/tmp/cgw-image
# Build dependencies of the gateway's Python packages that have no arm64 wheel (systemd-python):
# installed for the build only, removed again unless the image already had them.
BUILD_DEPS="python3-dev libsystemd-dev pkg-config gcc"

shopt -s nullglob
wheels=("${SRC}"/*.whl)
if [ "${#wheels[@]}" -ne 1 ]; then
	echo "stage-cgw: expected one cgw wheel in ${SRC}, found ${#wheels[@]}" >&2
	exit 1
fi
WHEEL="$(basename "${wheels[0]}")"
CONSTRAINTS=""
if [ -f "${SRC}/constraints.txt" ]; then
	CONSTRAINTS="--constraints ${DEST}/constraints.txt"
fi

rm -rf "${ROOTFS_DIR}${DEST}"
cp -a "${SRC}" "${ROOTFS_DIR}${DEST}"

on_chroot <<CHROOT
set -e
missing=""
for package in ${BUILD_DEPS}; do
	dpkg-query -W -f='\${Status}' "\$package" 2>/dev/null | grep -q "ok installed" || missing="\$missing \$package"
done
if [ -n "\$missing" ]; then
	apt-get install --no-install-recommends -y \$missing
fi
PIP_NO_CACHE_DIR=1 SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}" \
	sh ${DEST}/install.sh --root / --python /usr/bin/python3 \
	--wheel ${DEST}/${WHEEL} --unit ${DEST}/cgw.service --doc-dir ${DEST}/doc ${CONSTRAINTS}
/opt/cgw/venv/bin/cgw --version
if [ -n "\$missing" ]; then
	apt-get purge -y --auto-remove \$missing
fi
apt-get clean
CHROOT

rm -rf "${ROOTFS_DIR}${DEST}"
