"""A real tether daemon for the Runta SDK (runta-sdk, pinned; sync and async) tests. TETHER_BIN names the daemon binary
(scripts/runta-tests.sh)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

from tether_testing import CuttableProxy, Daemon, tether_cli  # noqa: F401 (the tests import them from here)
from tether_fixtures import bounded_test, daemon  # noqa: F401 (fixtures)


def url(d):
    return d.url + "/compat/runta"
