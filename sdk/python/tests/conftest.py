"""Fixtures: a real tether daemon (the workspace's binary, TETHER_BIN) on
port 0, and clients of it. Every API test takes `client`, which is
parametrised: the sync `tether.Client`, and the `tether.AsyncClient` driven
from the test's thread through `Blocking` (tests/blocking.py), so one test
body checks both with the same assertions."""

import os
import sys

import pytest

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "pysupport")
)

import tether_testing  # noqa: F401
from tether_testing import Daemon

import tether
from blocking import Blocking
from tether._portal import Portal


@pytest.fixture(scope="session")
def daemon():
    with Daemon() as d:
        yield d


@pytest.fixture(scope="session")
def portal():
    p = Portal("test-async-client")
    yield p
    p.close()


def make_client(kind, url, token, portal, **kwargs):
    """A client of `kind` ("sync" or "async") with the sync API."""
    if kind == "sync":
        return tether.Client(url, token=token, **kwargs)

    async def open_():
        return tether.AsyncClient(url, token=token, **kwargs)

    return Blocking(portal.call(open_()), portal)


@pytest.fixture(params=["sync", "async"])
def client(request, daemon, portal):
    c = make_client(request.param, daemon.url, daemon.token, portal)
    yield c
    c.close()


@pytest.fixture(params=["sync", "async"])
def connect(request, portal):
    """A factory of clients of one kind (sync, async) to any daemon or
    proxy: `connect(url, token, **kwargs)`. Closes them after the test."""
    made = []

    def make(url, token, **kwargs):
        c = make_client(request.param, url, token, portal, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
