#!/usr/bin/env bash
# Builds the microvm backend's guest artifacts into OUT_DIR (default /var/cache/vulcan/microvm):
#   vmlinuz           Debian's cloud kernel (linux-image-cloud-amd64), copied from /boot
#   initramfs.cpio    the agent as /init, plus the virtio/erofs/overlay modules it loads
#   minimal.erofs     a busybox root filesystem, for `sh` when the image store has no `minimal`
#   manifest.json     what was built, from which inputs (the backend reads this)
# Idempotent: does nothing when manifest.json matches the inputs' hash. Needs gcc, cpio,
# mkfs.erofs and busybox-static. Usage: guest/build.sh [OUT_DIR]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-/var/cache/vulcan/microvm}"

# The newest cloud kernel that has both an image in /boot and its modules.
KVER="${VULCAN_GUEST_KERNEL:-}"
if [[ -z "$KVER" ]]; then
  for dir in $(ls -1d /lib/modules/*-cloud-amd64 2>/dev/null | sort -V -r); do
    v="$(basename "$dir")"
    if [[ -r "/boot/vmlinuz-$v" ]]; then KVER="$v"; break; fi
  done
fi
[[ -n "$KVER" ]] || { echo "build.sh: no cloud kernel found; install linux-image-cloud-amd64 (scripts/setup.d/40-microvm.sh)" >&2; exit 1; }
MODDIR="/lib/modules/$KVER"
BUSYBOX="$(command -v busybox || true)"
[[ -n "$BUSYBOX" ]] || { echo "build.sh: busybox not found; install busybox-static" >&2; exit 1; }

# Modules the agent loads, in dependency order (closure taken from modules.dep).
# vsock is left out until the host side speaks it (virtio-serial works everywhere).
WANT=(virtio_mmio virtio_console virtio_blk erofs overlay)

INPUT_HASH="$( { echo "$KVER"; cat "$HERE/agent/agent.c" "$HERE/agent/sandbox.c" "$HERE/agent/protocol.h" "$HERE/build.sh"; sha256sum "/boot/vmlinuz-$KVER" "$BUSYBOX"; } | sha256sum | cut -c1-16)"
if [[ -f "$OUT/manifest.json" ]] && grep -q "\"buildId\": \"$INPUT_HASH\"" "$OUT/manifest.json"; then
  echo "microvm guest artifacts up to date in $OUT ($INPUT_HASH)"
  exit 0
fi

mkdir -p "$OUT"
WORK="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# 1. The agent, static so it needs nothing from the image.
CC="${CC:-gcc}"
if command -v musl-gcc >/dev/null 2>&1; then CC=musl-gcc; fi
"$CC" -static -Os -s -Wall -Wextra -o "$WORK/agent" "$HERE/agent/agent.c"

# 2. The initramfs.
IR="$WORK/initramfs"
mkdir -p "$IR"/{dev,proc,sys,etc/vulcan,lib/modules}
cp "$WORK/agent" "$IR/init"
mknod -m 600 "$IR/dev/console" c 5 1
declare -A SEEN=()
ORDER=()
add_module() { # $1: path relative to MODDIR
  local rel="$1" dep
  [[ -n "${SEEN[$rel]:-}" ]] && return 0
  SEEN[$rel]=1
  for dep in $(grep -E "^${rel}:" "$MODDIR/modules.dep" | cut -d: -f2); do add_module "$dep"; done
  ORDER+=("$rel")
}
for m in "${WANT[@]}"; do
  rel="$(grep -oE "^[^:]*/${m}\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -1 | tr -d :)"
  [[ -n "$rel" ]] || { echo "build.sh: module $m not in $MODDIR" >&2; exit 1; }
  add_module "$rel"
done
: > "$IR/etc/vulcan/modules"
for rel in "${ORDER[@]}"; do
  name="$(basename "$rel")"
  case "$name" in
    *.ko) cp "$MODDIR/$rel" "$IR/lib/modules/$name" ;;
    *.ko.xz) xz -dc "$MODDIR/$rel" > "$IR/lib/modules/${name%.xz}"; name="${name%.xz}" ;;
    *.ko.zst) zstd -qdc "$MODDIR/$rel" > "$IR/lib/modules/${name%.zst}"; name="${name%.zst}" ;;
  esac
  echo "$name" >> "$IR/etc/vulcan/modules"
done
# Uncompressed: under TCG the kernel's decompressor costs more than reading a few hundred KiB.
(cd "$IR" && find . -print0 | sort -z | cpio --null -o -H newc --quiet -R 0:0) > "$WORK/initramfs.cpio"

# 3. A busybox root filesystem, for `sh` when the image store has no `minimal` image.
RF="$WORK/rootfs"
mkdir -p "$RF"/{bin,etc,tmp,work,vulcan,proc,dev,usr/bin}
cp "$BUSYBOX" "$RF/bin/busybox"
for app in $("$BUSYBOX" --list); do
  [[ "$app" == busybox ]] || ln -sf busybox "$RF/bin/$app"
done
ln -sf ../../bin/tar "$RF/usr/bin/tar"
ln -sf ../../bin/env "$RF/usr/bin/env"
chmod 1777 "$RF/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nvulcan:x:1000:1000:vulcan:/work:/bin/sh\n' > "$RF/etc/passwd"
printf 'root:x:0:\nvulcan:x:1000:\n' > "$RF/etc/group"
mkfs.erofs --quiet -T0 --all-root "$WORK/minimal.erofs" "$RF" >/dev/null

# 4. The kernel and the manifest; moved into place last so a half-built cache is never used.
cp "/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
cat > "$WORK/manifest.json" <<EOF
{
  "buildId": "$INPUT_HASH",
  "kernelVersion": "$KVER",
  "kernel": "vmlinuz",
  "initramfs": "initramfs.cpio",
  "minimalRootfs": "minimal.erofs",
  "modules": [$(sed 's/.*/"&"/' "$IR/etc/vulcan/modules" | paste -sd, -)]
}
EOF
for f in vmlinuz initramfs.cpio minimal.erofs agent; do mv -f "$WORK/$f" "$OUT/$f"; done
mv -f "$WORK/manifest.json" "$OUT/manifest.json"
echo "built microvm guest artifacts in $OUT (kernel $KVER, build $INPUT_HASH)"
