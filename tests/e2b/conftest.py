"""A real tether daemon for the E2B SDK tests (`e2b`, pinned; sync and
async), and the sandboxes pointed at it. TETHER_BIN names the daemon binary
(scripts/e2b-tests.sh)."""
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

import pytest
from tether_testing import CuttableProxy, Daemon, tether_cli  # noqa: F401 (the tests import them from here)
from tether_fixtures import bounded_test, daemon  # noqa: F401 (fixtures)


def url(d):
    return d.url + "/compat/e2b"


def connect(d, token=None):
    from e2b import Sandbox

    u = url(d)
    return Sandbox.connect("local", api_key=token or d.token, api_url=u, sandbox_url=u)


@pytest.fixture
def sbx(daemon):
    return connect(daemon)


@pytest.fixture
def run_async():
    """Runs a coroutine to its end on a fresh loop (bounded)."""
    def run(coro, within=45):
        return asyncio.run(asyncio.wait_for(coro, within))
    return run
