"""The deploy/ tests (scripts/deploy-tests.sh): the systemd unit, the
config file, the container image's Dockerfile and its PID 1 behaviour, the
Kubernetes manifests. TETHER_BIN names the daemon binary."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

from tether_fixtures import bounded_test  # noqa: E402,F401 (every test ends within its limit)
