#!/usr/bin/env bash
# The Python SDK (sdk/python): installed into a venv under target/ with its
# test extras, then ruff, mypy --strict and pytest against the real daemon
# (TETHER_BIN, the workspace's debug build). Prints "# pass N" / "# fail N"
# for scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
stamp=$venv/.installed-$(sha256sum sdk/python/pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -e "sdk/python[test]"
  touch "$stamp"
fi
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
echo "$out"
# The chaos cells append to $CHAOS_RESULTS when it is set: show this client's row.
if [ -n "${CHAOS_RESULTS:-}" ] && [ -f "$CHAOS_RESULTS" ]; then
  python3 scripts/chaos-table.py "$CHAOS_RESULTS" --expect python || true
fi
passed=$(echo "$out" | { grep -oE '[0-9]+ passed' || true; } | tail -1 | cut -d' ' -f1)
failed=$(echo "$out" | { grep -oE '[0-9]+ (failed|errors?)' || true; } | awk '{n += $1} END {print n + 0}')
[ -n "$passed$failed" ] && [ "$pstatus" = 0 ] || failed=$(( ${failed:-0} > 0 ? failed : 1 ))
# ruff and mypy count as one test each.
[ "$status" = 0 ] || failed=$(( ${failed:-0} + 1 ))
echo "# pass ${passed:-0}"
echo "# fail ${failed:-0}"
[ "$pstatus" = 0 ] && [ "$status" = 0 ] && [ "${failed:-0}" = 0 ]
