#!/usr/bin/env bash
# Vulcan's one setup command, for Debian 12 (or newer) with Node 20+, as root:
#   scripts/setup.sh             install everything, build, then start the server on 127.0.0.1:7423
#   scripts/setup.sh --no-start  install and build only (CI, packaging)
# Running it again is fast: each step skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=1
for arg in "$@"; do
  case "$arg" in
    --no-start) START=0 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [[ $EUID -ne 0 ]]; then
  echo "setup: run as root (it installs Debian packages and manages cgroups)" >&2
  exit 1
fi

# 1. Debian packages: only the missing ones, so a second run does not touch apt. One list for
#    every backend, so one `apt-get update` serves all (the scripts/setup.d/ scripts check
#    again for what they need):
#    core + namespace: bubblewrap, python3, gcc (native helpers), procps (tests),
#    util-linux (chrt: the store's write thread runs under SCHED_BATCH);
#    gvisor: runsc; container: docker.io; images: mmdebstrap, busybox-static;
#    microvm: qemu-system-x86, linux-image-cloud-amd64, erofs-utils, cpio;
#    benchmark: wrk (the HTTP load generator of the throughput rows: C, so its own CPU barely
#    counts against the server on a small machine).
#    (prometheus and chromium come from setup.d/50-observability.sh, which keeps the
#    prometheus service from starting.)
PACKAGES=(bubblewrap python3 gcc libc6-dev tar gzip ca-certificates procps util-linux
  runsc docker.io mmdebstrap busybox-static
  qemu-system-x86 linux-image-cloud-amd64 erofs-utils cpio wrk)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  step "Debian packages present"
fi

# 2. npm dependencies, only when package-lock.json changed since the last install.
#    Native addons (better-sqlite3, isolated-vm) build from source against Node's headers;
#    .npmrc's strict-allow-scripts fails the install if an unreviewed package wants to run a script.
node -e 'const [a]=process.versions.node.split(".").map(Number); if (a<20) { console.error("setup: Node 20 or newer is needed, found "+process.version); process.exit(1) }'
if [[ -d /usr/include/node ]]; then export npm_config_nodedir=/usr; fi
stamp=node_modules/.vulcan-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  step "installing npm dependencies (native addons build from source: a few minutes the first time)"
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
else
  step "npm dependencies up to date"
fi

# 3. Build: TypeScript and the small native helpers.
step "building"
npm run --silent build

# 4. Each backend's host setup (packages, images, daemons), in order.
for s in scripts/setup.d/*.sh; do
  [[ -e $s ]] || continue
  step "setup: $(basename "$s")"
  bash "$s"
done

# 5. The CLI on the PATH.
ln -sf "$ROOT/bin/vulcan" /usr/local/bin/vulcan

if ((START)); then
  step "starting vulcan on ${VULCAN_HOST:-127.0.0.1}:${VULCAN_PORT:-7423} (data in ${VULCAN_DATA_DIR:-/var/lib/vulcan}); Ctrl-C stops it"
  exec "$ROOT/bin/vulcan" serve
fi
step "done: start the server with 'vulcan serve'"
