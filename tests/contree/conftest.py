"""A real tether daemon for the ConTree SDK (contree-sdk, pinned; sync and async) tests. TETHER_BIN names the daemon binary
(scripts/contree-tests.sh)."""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

import pytest
from tether_testing import CutProxy, CuttableProxy, Daemon, tether_cli  # noqa: F401 (the tests import them from here)
from tether_fixtures import bounded_test, daemon  # noqa: F401 (fixtures)


def url(d):
    return d.url + "/compat/contree"


def config(d, token=None, base=None):
    """The SDK's config for daemon `d` (JWTAuth: the bearer token only), polling at most every 0.2 s."""
    from contree_sdk.auth import JWTAuth
    from contree_sdk.config import ContreeConfig

    return ContreeConfig(
        auth=JWTAuth(token=token or d.token, base_url=base or url(d)),
        operation_poll_secs_min=0.02,
        operation_poll_secs_max=0.2,
    )


@pytest.fixture
def client(daemon):
    from contree_sdk import ContreeSync

    return ContreeSync(config(daemon))


@pytest.fixture
def img(client):
    return client.images.use("local")


@pytest.fixture
def run_async():
    """Runs a coroutine to its end on a fresh loop (bounded)."""
    def run(coro, within=45):
        return asyncio.run(asyncio.wait_for(coro, within))
    return run


def commands(d):
    """`tether ls --json`: the daemon's commands."""
    out = tether_cli(d, "ls", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(pred, what, within=20.0):
    """Waits (polling, bounded) until pred() returns something truthy; returns it."""
    deadline = time.monotonic() + within
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running_with(d, needle):
    """The running commands whose argv mentions `needle`."""
    return [c for c in commands(d) if needle in " ".join(c.get("argv", [])) and c.get("exit") is None]
