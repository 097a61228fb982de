#!/usr/bin/env bash
# Observability and benchmark-report tools from Debian's packages: prometheus (the server
# and promtool, for the metrics tests) and chromium (headless, for the HTML report test).
# Idempotent: installs only what is missing, so a second run touches nothing.
# Env: VULCAN_SKIP_OBSERVABILITY=1 skips this step.
set -euo pipefail

if [ "${VULCAN_SKIP_OBSERVABILITY:-}" = 1 ]; then echo "observability: skipped (VULCAN_SKIP_OBSERVABILITY=1)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "observability: not root, skipping (the Prometheus and Chromium tests will skip)"; exit 0; fi

missing=()
for p in prometheus chromium; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then echo "observability: prometheus and chromium present"; exit 0; fi

echo "observability: installing ${missing[*]}"
apt-get update -q >/dev/null
# The prometheus package's postinst would start a system service; this host may have no init
# system, and the tests start their own server on a random port, so policy-rc.d keeps it off.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
trap 'if [ "$created" = 1 ]; then rm -f "$policy"; fi' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "observability: installed ${missing[*]}"
