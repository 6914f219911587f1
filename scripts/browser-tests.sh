#!/usr/bin/env bash
# The browser terminal's tests: the JS unit tests (golden frames, session
# logic) and the end-to-end tests of the page in headless Chromium against a
# freshly built daemon. Installs chromium (apt, as root) and the npm packages
# if they are missing. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "missing: $CHROMIUM (apt-get install chromium, or set CHROMIUM)" >&2; exit 1
  fi
fi
command -v npm >/dev/null || { echo "missing: node and npm" >&2; exit 1; }

# Same rule as crates/tether-server/build.rs: reinstall when the lock file is newer.
if [ ! -e web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  (cd web && npm ci --no-audit --no-fund)
fi

# The daemon embeds the page (build.rs runs the npm build).
cargo build --locked -p tether
export TETHER_BIN=${TETHER_BIN:-$PWD/target/debug/tether} CHROMIUM

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
(cd web && npm test --silent) 2>&1 | tee -a "$log" || status=1
(cd web && npm run --silent test:browser) 2>&1 | tee -a "$log" || status=1
# One summary line over both runs (node --test prints "# pass N" / "# fail N").
awk '/^# pass / { p += $3 } /^# fail / { f += $3 } END { printf "\nbrowser tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
