#!/usr/bin/env bash
# Runs every test of the project: unit, golden-frame, end-to-end (real daemon,
# real processes, a connection-cutting proxy) and CLI tests.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests use from the system (present on Debian; installed if not).
need=()
command -v bash >/dev/null || need+=(bash)
command -v setsid >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; else
    echo "missing: ${need[*]} (install them, or run as root)" >&2; exit 1; fi
fi

cargo test --workspace --locked
