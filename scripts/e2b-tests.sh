#!/usr/bin/env bash
# The E2B SDK (e2b, pinned; sync and async clients) driven against a real
# tether daemon: tests/e2b. Installs the SDK into a venv under target/.
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
pytest_summary - "$out" "$status"
