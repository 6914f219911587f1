#!/usr/bin/env bash
# The ConTree SDK (contree-sdk, pinned; sync and async clients) driven against a
# real tether daemon: tests/contree. Installs the SDK into a venv under
# target/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
version=0.3.6
venv=target/contree-venv
ensure_venv "$venv" "import importlib.metadata as m, pytest, sys; sys.exit(m.version('contree-sdk') != '$version')" \
  "contree-sdk==$version" pytest
cargo build --locked -q -p tether
set +e
out=$(TETHER_BIN=target/debug/tether timeout 600 "$venv/bin/pytest" -q -p no:cacheprovider tests/contree 2>&1)
status=$?
set -e
pytest_summary - "$out" "$status"
