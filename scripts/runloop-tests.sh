#!/usr/bin/env bash
# The Runloop SDK (runloop-api-client, two pinned releases: 2.0.0 with its
# named shells, 3.0.0 the latest; sync and async) driven against a real
# tether daemon: tests/runloop, once per release. Installs each release
# into its own venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
cargo build --locked -q -p tether
status=0
for version in 2.0.0 3.0.0; do
  venv=target/runloop-${version%%.*}-venv
  ensure_venv "$venv" "import importlib.metadata as m, pytest, sys; sys.exit(m.version('runloop-api-client') != '$version')" \
    "runloop-api-client==$version" pytest
  echo "runloop-api-client $version"
  set +e
  out=$(TETHER_BIN=target/debug/tether timeout 600 "$venv/bin/pytest" -q -p no:cacheprovider tests/runloop 2>&1)
  st=$?
  set -e
  pytest_summary - "$out" "$st" || status=1
done
exit "$status"
