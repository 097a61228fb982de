#!/usr/bin/env bash
# Docker for the container backend: install docker.io when it is missing, register gVisor's
# runsc as an OCI runtime in /etc/docker/daemon.json, and start dockerd when it is not
# running. Idempotent: a second run changes nothing and returns at once.
# Env: VULCAN_SKIP_DOCKER=1 skips this step; DOCKER_HOST (unix:// only) names another socket.
set -euo pipefail

if [ "${VULCAN_SKIP_DOCKER:-}" = 1 ]; then echo "docker: skipped (VULCAN_SKIP_DOCKER=1)"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "docker: not root, skipping (the container backend will report itself unavailable)"; exit 0; fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker: installing docker.io"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi

SOCK=/var/run/docker.sock
case "${DOCKER_HOST:-}" in
  unix://*) SOCK="${DOCKER_HOST#unix://}" ;;
  "") ;;
  *) echo "docker: DOCKER_HOST=$DOCKER_HOST is not a unix:// socket; leaving the daemon alone"; exit 0 ;;
esac

# Register runsc (gVisor) as a runtime. Keep every other key of an existing daemon.json.
CHANGED=0
RUNSC="$(command -v runsc || true)"
if [ -n "$RUNSC" ]; then
  mkdir -p /etc/docker
  CHANGED="$(node - "$RUNSC" <<'JS'
const fs = require('node:fs');
const file = '/etc/docker/daemon.json';
const runsc = process.argv[2];
let cfg = {};
try { cfg = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { if (e.code !== 'ENOENT') throw e; }
cfg.runtimes ??= {};
const want = { path: runsc, runtimeArgs: ['--platform=ptrace'] };
if (JSON.stringify(cfg.runtimes.runsc) === JSON.stringify(want)) { console.log(0); process.exit(0); }
cfg.runtimes.runsc = want;
fs.writeFileSync(file + '.tmp', JSON.stringify(cfg, null, 2) + '\n');
fs.renameSync(file + '.tmp', file);
console.log(1);
JS
)"
fi

alive() { curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }

if alive; then
  if [ "$CHANGED" = 1 ]; then
    # dockerd re-reads runtimes on SIGHUP; no restart needed.
    kill -HUP "$(cat /var/run/docker.pid 2>/dev/null || pgrep -xo dockerd)" 2>/dev/null || true
    echo "docker: registered runsc, reloaded dockerd"
  else
    echo "docker: dockerd already running"
  fi
  exit 0
fi

echo "docker: starting dockerd (log /var/log/vulcan-dockerd.log)"
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl start docker || true
fi
if ! alive; then
  # No init system here (a container): run dockerd detached, in its own session.
  setsid nohup dockerd -H "unix://$SOCK" >>/var/log/vulcan-dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 60); do
  if alive; then echo "docker: dockerd is up"; exit 0; fi
  sleep 0.5
done
echo "docker: dockerd did not answer on $SOCK within 30 s; see /var/log/vulcan-dockerd.log (the container backend will report itself unavailable)" >&2
exit 0
