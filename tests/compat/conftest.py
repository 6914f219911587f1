"""A real tether daemon for the LangSmith client tests, a proxy that cuts
connections, and the chaos matrix's fault proxy. TETHER_BIN names the daemon
binary, TETHER_FAULTPROXY the fault proxy's (scripts/compat-tests.sh)."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

import pytest
import tether_chaos
from tether_testing import (  # noqa: F401 (the tests import them from here)
    CutProxy, CuttableProxy, Daemon, FaultProxy, tether_cli,
)


@pytest.fixture(scope="module")
def daemon():
    with Daemon() as d:
        yield d


@pytest.fixture(scope="module")
def confined():
    """A daemon serving files only beneath `root` (--files-root), with a
    secret next to the root and symlinks inside pointing out to it."""
    top = os.path.realpath(tempfile.mkdtemp(prefix="tether-compat-confined-"))
    root, outside = os.path.join(top, "root"), os.path.join(top, "outside")
    os.makedirs(os.path.join(root, "dir"))
    os.makedirs(outside)
    with open(os.path.join(outside, "secret.txt"), "w") as f:
        f.write("secret needle\n")
    with open(os.path.join(root, "dir", "inside.txt"), "w") as f:
        f.write("inside needle\n")
    os.symlink("../outside", os.path.join(root, "up"))
    os.symlink(outside, os.path.join(root, "abs"))
    os.symlink("../../outside/secret.txt", os.path.join(root, "dir", "secret.txt"))
    with Daemon("--files-root", root, cwd=top) as d:
        yield {"url": d.url, "token": d.token, "root": root, "outside": outside}


def sandbox(url, token):
    from langsmith.sandbox import Sandbox, SandboxClient

    dataplane = url + "/compat/langsmith"
    # api_endpoint points at the daemon too, so the token never goes to
    # api.smith.langchain.com; auto_delete=False: nothing to delete.
    client = SandboxClient(api_endpoint=dataplane, api_key=token, max_retries=0)
    return Sandbox.from_dict({"name": "tether", "dataplane_url": dataplane}, client=client, auto_delete=False)


def assert_expires(sb, command_id, within=20):
    """Reconnects until the command is gone (its TTL ran out): the client
    raises `SandboxOperationError` `CommandNotFound`."""
    from langsmith.sandbox import SandboxOperationError

    deadline = time.monotonic() + within
    while True:
        try:
            sb.reconnect(command_id).result
        except SandboxOperationError as e:
            assert e.error_type == "CommandNotFound"
            return
        assert time.monotonic() < deadline, "still reconnectable long after its TTL"
        time.sleep(0.2)


@pytest.fixture
def sb(daemon):
    return sandbox(daemon["url"], daemon["token"])


@pytest.fixture(scope="module")
def big_ring_daemon():
    """A daemon whose rings (8 MiB per stream) hold a whole large output, so
    output written while a cut client is away is still there when it
    resumes (the client cannot see a gap)."""
    with Daemon("--ring-bytes", str(8 << 20)) as d:
        yield d


@pytest.fixture
def sse(monkeypatch):
    """The client's SSE transport (read from the environment on every call),
    with the WebSocket paths made to fail so a test cannot pass over them."""
    import langsmith.sandbox._sandbox as sandbox_mod
    import langsmith.sandbox._ws_execute as ws_mod

    def no_ws(*args, **kwargs):
        raise AssertionError("the WebSocket transport was used")

    monkeypatch.setenv("LANGSMITH_EXPERIMENTAL_FEATURES", "sandbox_sse_exec")
    monkeypatch.setattr(sandbox_mod.Sandbox, "_run_ws", no_ws)
    monkeypatch.setattr(ws_mod, "reconnect_ws_stream", no_ws)


@pytest.fixture
def chaos_daemon():
    """A daemon of the test's own (a cell may restart it) with a short
    keepalive (--peer-timeout 3 --ping-interval 1), its lines time-stamped."""
    with tether_chaos.chaos_daemon() as d:
        yield d
