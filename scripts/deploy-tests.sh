#!/usr/bin/env bash
# deploy/ checked for real on this machine (tests/deploy): the systemd unit
# with systemd-analyze, the config example against `tether serve --help`,
# the container's Dockerfile and the daemon as PID 1 of a PID namespace as
# an unprivileged user (unshare, setpriv: needs root), the Kubernetes
# manifests against the schemas kubernetes-validate ships (offline).
# TETHER_BIN names the daemon (default: build it, target/debug/tether).
# Prints "# pass N" / "# fail N" for scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh

# Tools from the system (present on Debian; installed if not).
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v unshare >/dev/null && command -v setpriv >/dev/null || need+=(util-linux)
command -v bash >/dev/null || need+=(bash)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; else
    echo "missing: ${need[*]} (install them, or run as root)" >&2; exit 1; fi
fi

venv=target/deploy-venv
stamped_venv "$venv" tests/deploy/requirements.txt -r tests/deploy/requirements.txt
if [ -z "${TETHER_BIN:-}" ]; then
  cargo build --locked -q -p tether
  TETHER_BIN=target/debug/tether
fi
set +e
out=$(TETHER_BIN=$TETHER_BIN timeout 300 "$venv/bin/pytest" -q -p no:cacheprovider -rs tests/deploy 2>&1)
st=$?
set -e
pytest_summary - "$out" "$st"
