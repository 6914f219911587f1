"""The pytest fixtures the SDK suites share (tests/e2b, tests/runloop,
tests/runta, tests/contree): import them into a conftest.

- `bounded_test` (autouse): every test ends within TEST_LIMIT seconds
  (SIGALRM; no pytest-timeout here), so a hang is a failure, not a stall.
- `daemon`: a real tether daemon for the test module (TETHER_BIN)."""
import pytest
import tether_testing
from tether_testing import Daemon

#: Longest a test may take, in seconds.
TEST_LIMIT = 60


@pytest.fixture(autouse=True)
def bounded_test():
    with tether_testing.time_limit(TEST_LIMIT):
        yield


@pytest.fixture(scope="module")
def daemon():
    with Daemon() as d:
        yield d
