#!/usr/bin/env bash
# Vulcan's test suite: builds, then runs every test file with node's test runner against
# the real parts (bwrap, cgroups, runsc, dockerd, qemu…). A test whose host part is missing
# is skipped with the reason printed; a skip never counts as a pass.
#   npm test                      everything
#   npm test -- namespace api     only test files whose path contains one of the words
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
# The whole suite also lints (type-aware rules: floating promises, any, non-null assertions).
if (($# == 0)); then npx eslint .; fi
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
if (($#)); then
  selected=()
  for f in "${files[@]}"; do for w in "$@"; do [[ $f == *"$w"* ]] && { selected+=("$f"); break; }; done; done
  files=("${selected[@]}")
fi
if ((${#files[@]} == 0)); then echo "no test files matched" >&2; exit 1; fi
exec node --test --test-concurrency="${VULCAN_TEST_CONCURRENCY:-1}" "${files[@]}"
