#!/usr/bin/env bash
# Installs the peers that tether-bench compares against:
#   websocketd (Debian package) and terminado + tornado (PyPI).
# Safe to run more than once; each step is skipped when its peer is present.
set -euo pipefail

if ! command -v websocketd >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    # apt-get install fails on a machine whose package lists were never
    # fetched, so update first.
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq websocketd
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import terminado, tornado' >/dev/null 2>&1; then
    "$PY" -m pip install --quiet terminado tornado
fi

echo "websocketd: $(command -v websocketd || echo missing)"
"$PY" -c 'import terminado, tornado; print("terminado", terminado.__version__, "tornado", tornado.version)'
