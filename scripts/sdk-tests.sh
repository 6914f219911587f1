#!/usr/bin/env bash
# The Python SDK (sdk/python): installed into a venv under target/ with its
# test extras, then ruff, mypy --strict and pytest against the real daemon
# (TETHER_BIN, the workspace's debug build). Prints "# pass N" / "# fail N"
# for scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
sdk_venv
cargo build --locked -q -p tether
cargo build --locked -q -p tether-tests --bins
status=0
(cd sdk/python && ../../$venv/bin/ruff check . && ../../$venv/bin/ruff format --check .) || status=1
(cd sdk/python && ../../$venv/bin/mypy) || status=1
set +e
out=$(cd sdk/python && TETHER_BIN=target/debug/tether TETHER_FAULTPROXY=target/debug/tether-faultproxy \
  timeout 900 ../../$venv/bin/pytest -q -p no:cacheprovider tests 2>&1)
pstatus=$?
set -e
# ruff and mypy count as one failure between them.
pytest_summary python "$out" "$pstatus" $(( status != 0 ))
