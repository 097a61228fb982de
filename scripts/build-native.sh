#!/usr/bin/env bash
# Builds Vulcan's small native helpers into build/ (skipped when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
for src in native/*.c; do
  out="build/$(basename "${src%.c}")"
  if [[ ! -x "$out" || "$src" -nt "$out" ]]; then
    flags=()
    # The PTY helper runs inside images that may have no libc (the sandbox agent bundle).
    [[ "$(basename "$src")" == vulcan-pty.c ]] && flags=(-static)
    cc -O2 -Wall -Wextra -Werror "${flags[@]}" -o "$out" "$src"
  fi
done
