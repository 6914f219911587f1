#!/usr/bin/env bash
# tether behind reverse proxies (tests/proxy): Debian's nginx and Caddy,
# configured from deploy/proxy/ (the documented files themselves), in
# front of real daemons, driven with the Python SDK (sdk/python, installed
# into a venv under target/ with its test extras), a browser-like WebSocket
# and the CLI. Installs nginx and caddy if missing (as root). TETHER_BIN
# and TETHER_FAULTPROXY name prebuilt binaries; unset, they are built.
# Prints "# pass N" / "# fail N" for scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v caddy >/dev/null || need+=(caddy)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them, or run as root)" >&2; exit 1
  fi
fi
sdk_venv
tether_binaries
set +e
out=$(timeout 300 "$venv/bin/pytest" -q -p no:cacheprovider tests/proxy 2>&1)
status=$?
set -e
pytest_summary - "$out" "$status"
