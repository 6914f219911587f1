#!/usr/bin/env bash
# The Daytona SDK (daytona, pinned; sync and async clients) driven against a
# real tether daemon: tests/daytona. Installs the SDK into a venv under
# target/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
version=0.226.1
venv=target/daytona-venv
ensure_venv "$venv" "import importlib.metadata as m, pytest, sys; sys.exit(m.version('daytona') != '$version')" \
  "daytona==$version" pytest
cargo build --locked -q -p tether
set +e
out=$(TETHER_BIN=target/debug/tether timeout 600 "$venv/bin/pytest" -q -p no:cacheprovider tests/daytona 2>&1)
status=$?
set -e
pytest_summary - "$out" "$status"
