#!/usr/bin/env bash
# The E2B SDKs driven against a real tether daemon: tests/e2b (e2b on PyPI,
# pinned, sync and async) and tests/e2b/js (e2b on npm, pinned). Installs
# the Python SDK into a venv under target/ and the npm one under
# tests/e2b/js/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
version=2.63.0
venv=target/e2b-venv
ensure_venv "$venv" "import importlib.metadata as m, pytest, sys; sys.exit(m.version('e2b') != '$version')" \
  "e2b==$version" pytest
cargo build --locked -q -p tether
set +e
out=$(TETHER_BIN=target/debug/tether timeout 600 "$venv/bin/pytest" -q -p no:cacheprovider tests/e2b 2>&1)
status=$?
set -e
pytest_summary - "$out" "$status" || status=1
# The npm SDK (pinned in tests/e2b/js/package.json): a command, a PTY, a file.
if [ ! -d tests/e2b/js/node_modules/e2b ]; then
  (cd tests/e2b/js && npm ci --no-audit --no-fund --silent)
fi
set +e
(cd tests/e2b/js && TETHER_BIN=../../../target/debug/tether timeout 300 npm test --silent 2>&1)
js=$?
set -e
[ "$js" = 0 ] || { echo "# fail 1"; status=1; }
exit "$status"
