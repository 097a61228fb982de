#!/usr/bin/env bash
# Builds Vulcan's small native helpers into build/ (skipped when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
for src in native/*.c; do
  out="build/$(basename "${src%.c}")"
  if [[ ! -x "$out" || "$src" -nt "$out" ]]; then
    cc -O2 -Wall -Wextra -Werror -o "$out" "$src"
  fi
done
