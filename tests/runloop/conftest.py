"""A real tether daemon for the Runloop SDK (runloop-api-client 2.0.0 or 3.0.0, whichever the venv holds; sync and async) tests. TETHER_BIN names the daemon binary
(scripts/runloop-tests.sh)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

import pytest
from tether_testing import CuttableProxy, Daemon, tether_cli  # noqa: F401 (the tests import them from here)
from tether_fixtures import bounded_test, daemon  # noqa: F401 (fixtures)


def url(d):
    return d.url + "/compat/runloop"


def sdk_for(d, token=None, **kw):
    """A RunloopSDK pointed at daemon `d` (a Daemon, or a proxy's URL in
    `base`)."""
    from runloop_api_client import RunloopSDK

    base = kw.pop("base", None) or url(d)
    return RunloopSDK(bearer_token=token or d.token, base_url=base, **kw)


def async_sdk_for(d, token=None, **kw):
    from runloop_api_client import AsyncRunloopSDK

    base = kw.pop("base", None) or url(d)
    return AsyncRunloopSDK(bearer_token=token or d.token, base_url=base, **kw)


@pytest.fixture
def sdk(daemon):
    s = sdk_for(daemon)
    yield s
    s.close()


@pytest.fixture
def devbox(sdk):
    return sdk.devbox.from_id("local")


def in_shell(devbox, name):
    """The named shell `name` of `devbox` as 2.0.0's `devbox.shell(name)`
    has it, or, on 3.0.0 (which dropped it), the same wire request through
    `extra_body`. Returns (exec, exec_async)."""
    if hasattr(devbox, "shell"):
        sh = devbox.shell(name)
        return sh.exec, sh.exec_async

    def exec_(cmd, **kw):
        return devbox.cmd.exec(cmd, extra_body={"shell_name": name}, **kw)

    def exec_async(cmd, **kw):
        return devbox.cmd.exec_async(cmd, extra_body={"shell_name": name}, **kw)

    return exec_, exec_async


class Collect:
    """A callback that keeps what it is given, in order (thread-safe)."""

    def __init__(self):
        import threading

        self.parts = []
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)

    def __call__(self, text):
        with self.cv:
            self.parts.append(text)
            self.cv.notify_all()

    def text(self):
        with self.lock:
            return "".join(self.parts)

    def wait_for(self, pred, timeout=20):
        with self.cv:
            assert self.cv.wait_for(lambda: pred("".join(self.parts)), timeout), "".join(self.parts)[-200:]
