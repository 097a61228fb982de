#!/usr/bin/env bash
# The microvm backend's host side: QEMU (qemu-system-x86), Debian's cloud kernel
# (linux-image-cloud-amd64, its virtio drivers are modules), busybox-static, erofs-utils,
# cpio and a C compiler (musl-tools when it installs, gcc otherwise), then the guest
# artifacts (kernel, initramfs with the agent, busybox disk) built into a cache by
# guest/build.sh. Idempotent: a second run installs nothing and rebuilds nothing.
# Env: VULCAN_SKIP_MICROVM=1 skips; VULCAN_MICROVM_CACHE (default /var/cache/vulcan/microvm).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

if [ "${VULCAN_SKIP_MICROVM:-}" = 1 ]; then echo "microvm: skipped (VULCAN_SKIP_MICROVM=1)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "microvm: not root, skipping (the microvm backend will report what is missing)"; exit 0; fi

missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || missing+=(linux-image-cloud-amd64)
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
command -v mkfs.erofs >/dev/null 2>&1 || missing+=(erofs-utils)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "microvm: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# musl gives a ~60 KiB agent instead of ~700 KiB with glibc; optional.
if ! command -v musl-gcc >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends musl-tools >/dev/null 2>&1 || echo "microvm: musl-tools unavailable; building the agent with glibc"
fi

bash "$ROOT/guest/build.sh" "${VULCAN_MICROVM_CACHE:-/var/cache/vulcan/microvm}"
