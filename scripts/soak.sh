#!/usr/bin/env bash
# The soak of issue #19 (tests/soak/soak.py): a churn of every kind of
# operation from many clients against one daemon, with faults and graceful
# restarts, then the daemon's fds, threads, children and RSS checked against
# a baseline. SOAK_SECONDS (default 600, the CI budget) sets its length,
# SOAK_CLIENTS its clients (default 10); for hours:
#   SOAK_SECONDS=14400 bash scripts/soak.sh
# Arguments go to soak.py (--seed N repeats a run's choices). TETHER_BIN and
# TETHER_FAULTPROXY name the binaries; unset, the workspace's debug builds
# are made and used. Prints "# pass 1" / "# fail 1" for scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pytest-summary.sh
sdk_venv
tether_binaries
seconds=${SOAK_SECONDS:-600}
# Past the run: the warm-up and baseline (about 30 s), the last operations
# (at most 180 s each), the TTL sweep and the settling of the figures (at
# most 130 s).
set +e
timeout --kill-after=10 $(( seconds + 420 )) "$venv/bin/python" tests/soak/soak.py --seconds "$seconds" "$@"
status=$?
set -e
[ "$status" = 124 ] && echo "soak: killed by the timeout after $(( seconds + 420 )) s"
if [ "$status" = 0 ]; then echo "# pass 1"; echo "# fail 0"; else echo "# pass 0"; echo "# fail 1"; fi
exit "$status"
