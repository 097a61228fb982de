#!/usr/bin/env bash
# Builds Vulcan's small native helpers into build/ (skipped when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
for src in native/*.c; do
  out="build/$(basename "${src%.c}")"
  if [[ ! -x "$out" || "$src" -nt "$out" ]]; then
    flags=()
    # The PTY and spawn helpers run inside images that may have no libc (the sandbox agent bundle).
    case "$(basename "$src")" in vulcan-pty.c | vulcan-spawnd.c) flags=(-static) ;; esac
    cc -O2 -Wall -Wextra -Werror "${flags[@]}" -o "$out" "$src"
  fi
done
