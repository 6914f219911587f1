#!/usr/bin/env bash
# Runs every test of the project: unit, golden-frame, end-to-end (real daemon,
# real processes, a connection-cutting proxy), CLI tests (interactive ones in
# tmux), the browser terminal's tests (JS units, headless Chromium), and the
# LangSmith sandbox client driven against the daemon (tests/compat), the
# Daytona, E2B, Runloop, Runta and ConTree SDKs driven against it
# (tests/<name>), the deployment files (tests/deploy), the Python SDK
# (sdk/python), the daemon behind nginx and Caddy (tests/proxy), and the
# soak (tests/soak).
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests use from the system (present on Debian; installed if not).
need=()
command -v bash >/dev/null || need+=(bash)
command -v setsid >/dev/null || need+=(util-linux)
command -v tmux >/dev/null || need+=(tmux)
command -v less >/dev/null || need+=(less)
command -v npm >/dev/null || need+=(nodejs npm)
command -v promtool >/dev/null || need+=(prometheus)   # the metrics test's format check
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; else
    echo "missing: ${need[*]} (install them, or run as root)" >&2; exit 1; fi
fi

# The tests' commands, shells and terminals run with a HOME of their own, so
# they never source the user's rc files: a login shell killed while pyenv's
# rehash (in a typical ~/.bashrc) holds its lock leaves the lock behind,
# and every later login or interactive shell then waits 60 s for it. The
# tools keep their own places.
real_home=$HOME
export CARGO_HOME=${CARGO_HOME:-$real_home/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-$real_home/.rustup}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$real_home/.cache} npm_config_cache=${npm_config_cache:-$real_home/.npm}
[ -f "$real_home/.npmrc" ] && export NPM_CONFIG_USERCONFIG=${NPM_CONFIG_USERCONFIG:-$real_home/.npmrc}
HOME=$(mktemp -d "${TMPDIR:-/tmp}/tether-test-home.XXXXXX")
export HOME
log=$(mktemp)
trap 'rm -rf "$log" "$HOME"' EXIT
# The chaos matrix's cells (crates/tether/tests/chaos.rs, the browser's,
# the LangSmith client's) append their results here; the table is printed
# at the end. CHAOS_ROUNDS=N runs every cell N times (default 1).
mkdir -p target
export CHAOS_RESULTS=${CHAOS_RESULTS:-$PWD/target/chaos-results.jsonl}
: > "$CHAOS_RESULTS"
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The browser terminal (installs chromium and the npm packages if missing).
bash scripts/browser-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The LangSmith sandbox client against the daemon (installs it if missing).
bash scripts/compat-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The Daytona SDK against the daemon's Daytona dialect (installs it if missing).
bash scripts/daytona-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The E2B SDK against the daemon's E2B dialect (installs it if missing).
bash scripts/e2b-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The Runloop (two releases), Runta and ConTree SDKs against their dialects
# (each installs its pinned package if missing).
for sdk in runloop runta contree; do
  bash scripts/$sdk-tests.sh 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
done
# deploy/: the systemd unit, the container's Dockerfile and the daemon as
# PID 1, the Kubernetes manifests (installs kubernetes-validate if missing).
bash scripts/deploy-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The Python SDK: ruff, mypy --strict, pytest against the daemon (installs it).
bash scripts/sdk-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# Behind reverse proxies: nginx and Caddy from deploy/proxy/ in front of
# daemons, the SDK and the CLI through them (installs nginx and caddy).
bash scripts/proxy-tests.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The soak (issue #19): SOAK_SECONDS (default 600) of churn from many
# clients with faults and graceful restarts, then the daemon's fds, threads,
# children and RSS against its baseline (installs the SDK into a venv).
bash scripts/soak.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# Fuzz targets, FUZZ_SECONDS each (default 10; installs cargo-fuzz if missing).
bash scripts/fuzz.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# Licences, duplicate crates, sources; advisories with TETHER_ADVISORY_DB.
bash scripts/deny.sh 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The chaos matrix: client x fault, pass, reconnect time.
python3 scripts/chaos-table.py "$CHAOS_RESULTS" || status=1
set -e
# One summary line over all test binaries (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^# pass / { p += $3 } /^# fail / { f += $3 }
     END { printf "\ntotal: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
