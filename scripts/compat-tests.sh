#!/usr/bin/env bash
# The LangSmith sandbox client (langsmith, pinned) driven against a real
# tether daemon: tests/compat. Installs the client into a venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.14.17
venv=target/compat-venv
if ! "$venv/bin/python" -c "import langsmith, pytest, sys; sys.exit(langsmith.__version__ != '$version')" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "langsmith==$version" pytest
fi
cargo build --locked -q -p tether
# The chaos matrix's fault proxy (tests/compat/test_langsmith_chaos.py).
cargo build --locked -q -p tether-tests --bins
set +e
out=$(TETHER_BIN=target/debug/tether TETHER_FAULTPROXY=target/debug/tether-faultproxy \
  timeout 600 "$venv/bin/pytest" -q -p no:cacheprovider tests/compat 2>&1)
status=$?
set -e
echo "$out"
# The chaos cells append to $CHAOS_RESULTS when it is set: show this client's row.
if [ -n "${CHAOS_RESULTS:-}" ] && [ -f "$CHAOS_RESULTS" ]; then
  python3 scripts/chaos-table.py "$CHAOS_RESULTS" --expect langsmith || true
fi
# The summary line for scripts/test-all.sh.
passed=$(echo "$out" | { grep -oE '[0-9]+ passed' || true; } | tail -1 | cut -d' ' -f1)
failed=$(echo "$out" | { grep -oE '[0-9]+ (failed|errors?)' || true; } | awk '{n += $1} END {print n + 0}')
# No summary at all (a crash, the timeout): count it as a failure.
[ -n "$passed$failed" ] && [ "$status" = 0 ] || failed=$(( ${failed:-0} > 0 ? failed : 1 ))
echo "# pass ${passed:-0}"
echo "# fail ${failed:-0}"
[ "$status" = 0 ] && [ "${failed:-0}" = 0 ]
