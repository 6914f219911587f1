"""A real tether daemon for the ConTree SDK (contree-sdk, pinned; sync and async) tests. TETHER_BIN names the daemon binary
(scripts/contree-tests.sh)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

import pytest
import tether_testing
from tether_testing import CuttableProxy, Daemon, tether_cli  # noqa: F401 (the tests import them from here)

#: Every test is bounded (no pytest-timeout here).
TEST_LIMIT = 60


@pytest.fixture(autouse=True)
def time_limit():
    with tether_testing.time_limit(TEST_LIMIT):
        yield


@pytest.fixture(scope="module")
def daemon():
    with Daemon() as d:
        yield d


def url(d):
    return d.url + "/compat/contree"
