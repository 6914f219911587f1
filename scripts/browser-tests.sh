#!/usr/bin/env bash
# The browser terminal's tests: the JS unit tests (golden frames, session
# logic), the end-to-end tests of the page in headless Chromium against a
# freshly built daemon, and the browser's cells of the chaos matrix (the page
# through tether-faultproxy under resets, a freeze, refusals, a restart).
# Installs chromium (apt, as root) and the npm packages if they are missing.
# Each chaos cell appends a JSON line to $CHAOS_RESULTS (a temporary file if
# unset), printed as a table at the end. Exits non-zero if anything fails.
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

# The daemon embeds the page (build.rs runs the npm build); the chaos cells
# put the fault proxy between the page and the daemon.
cargo build --locked -p tether
cargo build --locked -p tether-tests --bins
export TETHER_BIN=${TETHER_BIN:-$PWD/target/debug/tether} CHROMIUM
export FAULTPROXY_BIN=${FAULTPROXY_BIN:-$PWD/target/debug/tether-faultproxy}

log=$(mktemp)
cleanup="rm -f '$log'"
if [ -z "${CHAOS_RESULTS:-}" ]; then
  CHAOS_RESULTS=$(mktemp)
  cleanup+="; rm -f '$CHAOS_RESULTS'"
fi
export CHAOS_RESULTS
trap "$cleanup" EXIT
status=0
(cd web && npm test --silent) 2>&1 | tee -a "$log" || status=1
(cd web && npm run --silent test:browser) 2>&1 | tee -a "$log" || status=1
(cd web && npm run --silent test:chaos) 2>&1 | tee -a "$log" || status=1
# The browser's row of the chaos matrix (a missing or failed cell fails).
python3 scripts/chaos-table.py "$CHAOS_RESULTS" --expect browser || status=1
# One summary line over all runs (node --test prints "# pass N" / "# fail N").
awk '/^# pass / { p += $3 } /^# fail / { f += $3 } END { printf "\nbrowser tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
