#!/usr/bin/env bash
# The built-in images: minimal (busybox), python (Debian bookworm minbase + python3) and node
# (Debian trixie minbase + nodejs 20), in the image store under the data dir. Built once
# (about 1-2 minutes with mmdebstrap on 2 cores) and cached: a second run returns at once.
# Needs the build (dist/) and root. Env: VULCAN_DATA_DIR (default /var/lib/vulcan);
# VULCAN_SKIP_IMAGES=1 skips; VULCAN_DEBIAN_MIRROR picks the mirror.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

if [ "${VULCAN_SKIP_IMAGES:-}" = 1 ]; then echo "images: skipped (VULCAN_SKIP_IMAGES=1)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "images: not root, skipping (gvisor and container will report the images missing)"; exit 0; fi

missing=()
command -v mmdebstrap >/dev/null 2>&1 || command -v debootstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "images: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

if [ ! -f "$ROOT/dist/src/cli/commands/image/setup.js" ]; then
  (cd "$ROOT" && npx tsc -p tsconfig.json >/dev/null || true)
fi

export VULCAN_DATA_DIR="${VULCAN_DATA_DIR:-/var/lib/vulcan}"
node --input-type=module -e "
const { imageSetup } = await import('$ROOT/dist/src/cli/commands/image/setup.js');
await imageSetup({ dataDir: process.env.VULCAN_DATA_DIR });
"
