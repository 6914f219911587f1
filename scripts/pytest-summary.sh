# Sourced by the scripts that run a Python suite (compat-tests.sh,
# daytona-tests.sh, sdk-tests.sh, proxy-tests.sh, soak.sh, ...).
#
# `ensure_venv VENV CHECK PIP_ARGS...` makes VENV with `pip install
# PIP_ARGS` unless its python already passes CHECK (a `python -c` program).
ensure_venv() {
  local venv=$1 check=$2
  shift 2
  if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@"
  fi
}

# `stamped_venv VENV FILE PIP_ARGS...` makes VENV with `pip install
# PIP_ARGS` unless it was made from this content of FILE (a stamp named
# after FILE's hash).
stamped_venv() {
  local venv=$1 file=$2 stamp
  shift 2
  stamp=$venv/.installed-$(sha256sum "$file" | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@"
    touch "$stamp"
  fi
}

# `sdk_venv` sets $venv to the Python SDK's venv (target/sdk-venv: the SDK
# with its test extras), made if need be; the SDK's suite, the proxy suite
# and the soak share it.
sdk_venv() {
  venv=target/sdk-venv
  stamped_venv "$venv" sdk/python/pyproject.toml -e "sdk/python[test]"
}

# `tether_binaries` exports TETHER_BIN and TETHER_FAULTPROXY, building the
# workspace's debug daemon and fault proxy for whichever is not named.
tether_binaries() {
  if [ -z "${TETHER_BIN:-}" ]; then
    cargo build --locked -q -p tether
    export TETHER_BIN=target/debug/tether
  fi
  if [ -z "${TETHER_FAULTPROXY:-}" ]; then
    cargo build --locked -q -p tether-tests --bins
    export TETHER_FAULTPROXY=target/debug/tether-faultproxy
  fi
}

# `pytest_summary CLIENT OUT STATUS [EXTRA_FAILURES]` prints OUT (pytest's
# output), the chaos matrix row of CLIENT when $CHAOS_RESULTS is set (CLIENT
# `-`: a suite with no chaos cells), and the "# pass N" / "# fail N" lines
# scripts/test-all.sh adds up; returns non-zero if anything failed. A run
# without pytest's summary (a crash, the timeout) counts as a failure.
pytest_summary() {
  local client=$1 out=$2 status=$3 extra=${4:-0} passed failed
  echo "$out"
  if [ "$client" != - ] && [ -n "${CHAOS_RESULTS:-}" ] && [ -f "$CHAOS_RESULTS" ]; then
    python3 scripts/chaos-table.py "$CHAOS_RESULTS" --expect "$client" || true
  fi
  passed=$(echo "$out" | { grep -oE '[0-9]+ passed' || true; } | tail -1 | cut -d' ' -f1)
  failed=$(echo "$out" | { grep -oE '[0-9]+ (failed|errors?)' || true; } | awk '{n += $1} END {print n + 0}')
  [ -n "$passed$failed" ] && [ "$status" = 0 ] || failed=$(( ${failed:-0} > 0 ? failed : 1 ))
  failed=$(( ${failed:-0} + extra ))
  echo "# pass ${passed:-0}"
  echo "# fail ${failed}"
  [ "$status" = 0 ] && [ "$failed" = 0 ]
}
