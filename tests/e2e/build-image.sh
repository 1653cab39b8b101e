#!/usr/bin/env bash
# Builds (or reuses) hangar's e2e base image: Debian 12 with the cloud kernel,
# cloud-init, systemd, docker.io, qemu-guest-agent, openssh-server (for the ssh
# test: guests have no package network) and a stand-in Actions runner at
# /opt/actions-runner, as a qcow2 disk plus the kernel and initrd for a direct
# kernel boot (`root=/dev/vda console=ttyS0`): an image built without root
# tricks (no loop device, `mkfs.ext4 -d`) has no bootloader.
#
# The result is cached outside the checkout, keyed by the sha256 of this
# recipe and the stand-in runner, so reruns skip the build:
#   ${HANGAR_E2E_CACHE:-/var/cache/hangar-e2e}/<key>/{disk.qcow2,vmlinuz,initrd.img}
# Prints KEY=VALUE lines on stdout (IMAGE, KERNEL, INITRD, CMDLINE,
# RUNNER_DIR); progress goes to stderr.
#
# Needs mmdebstrap, e2fsprogs and qemu-utils, and root (mmdebstrap's root
# mode keeps file ownership in the tree that mkfs.ext4 -d copies).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${HANGAR_E2E_CACHE:-/var/cache/hangar-e2e}
suite=bookworm
mirror=${HANGAR_E2E_MIRROR:-http://deb.debian.org/debian}
packages=systemd-sysv,linux-image-cloud-amd64,cloud-init,udev,kmod,ifupdown,iproute2,netbase,sudo,e2fsprogs,dbus,docker.io,qemu-guest-agent,openssh-server
disk_size=3G
runner_dir=/opt/actions-runner
cmdline="root=/dev/vda rw console=ttyS0"

key=$(cat "${BASH_SOURCE[0]}" "$here/runner/config.sh" "$here/runner/run.sh" | sha256sum | cut -c1-16)
out=$cache_root/$key

print_paths() {
  echo "IMAGE=$out/disk.qcow2"
  echo "KERNEL=$out/vmlinuz"
  echo "INITRD=$out/initrd.img"
  echo "CMDLINE=$cmdline"
  echo "RUNNER_DIR=$runner_dir"
}

if [ -f "$out/complete" ]; then
  echo "build-image: reusing $out" >&2
  print_paths
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: must run as root (mmdebstrap root mode keeps ownership for mkfs.ext4 -d)" >&2
  exit 1
fi
for tool in mmdebstrap mkfs.ext4 qemu-img; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (.ci/install-deps)" >&2; exit 1; }
done

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

echo "build-image: mmdebstrap $suite into $work/rootfs" >&2
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"' \
  --customize-hook='rm -f "$1/etc/hostname"' \
  --customize-hook='printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90-hangar-e2e.cfg"' \
  --customize-hook="mkdir -p \"\$1$runner_dir\"" \
  --customize-hook="copy-in $here/runner/config.sh $here/runner/run.sh $runner_dir" \
  --customize-hook="chmod 0755 \"\$1$runner_dir/config.sh\" \"\$1$runner_dir/run.sh\"" \
  "$suite" "$work/rootfs" "$mirror" >&2

cp "$work"/rootfs/boot/vmlinuz-* "$work/vmlinuz"
cp "$work"/rootfs/boot/initrd.img-* "$work/initrd.img"

echo "build-image: mkfs.ext4 -d ($disk_size) and qcow2" >&2
mkfs.ext4 -q -F -L hangar-root -d "$work/rootfs" "$work/disk.raw" "$disk_size"
qemu-img convert -O qcow2 -o compat=1.1 "$work/disk.raw" "$work/disk.qcow2"

mkdir -p "$out"
mv "$work/disk.qcow2" "$work/vmlinuz" "$work/initrd.img" "$out/"
echo "built in $(( $(date +%s) - start )) s on $(date -u +%FT%TZ)" > "$out/complete"
echo "build-image: built $out in $(( $(date +%s) - start )) s" >&2
print_paths
