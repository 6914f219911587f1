#!/usr/bin/env bash
# The LangSmith sandbox client (langsmith, pinned) driven against a real
# tether daemon: tests/compat. Installs the client into a venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
version=0.14.17
venv=target/compat-venv
ensure_venv "$venv" "import langsmith, pytest, sys; sys.exit(langsmith.__version__ != '$version')" \
  "langsmith==$version" pytest
cargo build --locked -q -p tether
# The chaos matrix's fault proxy (tests/compat/test_langsmith_chaos.py).
cargo build --locked -q -p tether-tests --bins
set +e
out=$(TETHER_BIN=target/debug/tether TETHER_FAULTPROXY=target/debug/tether-faultproxy \
  timeout 600 "$venv/bin/pytest" -q -p no:cacheprovider tests/compat 2>&1)
status=$?
set -e
pytest_summary langsmith "$out" "$status"
