"""A graceful restart under the real `langsmith` client: SIGUSR2 makes the
daemon close every dialect connection with 1001 and re-execute itself in
the same process, keeping its commands and listening socket; the client
reconnects from its offsets and the output comes out whole, once."""
import hashlib
import threading
import time
import urllib.request

import pytest

from conftest import Daemon, sandbox


@pytest.fixture
def d():
    # A daemon of this test's own: restarting it must not disturb others.
    with Daemon() as daemon:
        yield daemon


def digest(s):
    return hashlib.sha256(s.encode()).hexdigest()


def read_through_a_restart(h, d, after):
    """Iterates a handle's stdout, restarting the daemon once `after`
    characters have come; returns the whole stdout once the restart is over."""
    out, restarted_at = [], None
    for chunk in h:
        if chunk.stream == "stdout":
            out.append(chunk.data)
        if restarted_at is None and sum(map(len, out)) > after:
            restarted_at = d.restart()
    assert restarted_at is not None
    lines = d.wait_lines(restarted_at)
    assert lines[-1] == lines[0], "the same address after the restart"
    assert d.proc.poll() is None, "the daemon process lives on"
    return "".join(out)


def test_a_stream_survives_a_restart_byte_exact(d):
    sb = sandbox(d.url, d.token)
    # About 3.3 MB over about 2 s, read through a handle while the daemon
    # restarts once mid-stream.
    h = sb.run("for i in $(seq 0 19); do seq $((i*30000)) $((i*30000+29999)); sleep 0.1; done; exit 4",
               wait=False, timeout=120)
    got = read_through_a_restart(h, d, 100_000)
    want = "".join("%d\n" % i for i in range(600000))
    assert (len(got), digest(got)) == (len(want), digest(want))
    assert h.result.exit_code == 4


def test_run_waiting_for_a_command_survives_two_restarts(d):
    sb = sandbox(d.url, d.token)
    result = {}

    def run():
        result["r"] = sb.run("sleep 1.5; echo late; exit 6", timeout=60)

    t = threading.Thread(target=run)
    t.start()
    # The command has started once it is listed.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        req = urllib.request.Request(d.url + "/v1/commands", headers={"Authorization": "Bearer " + d.token})
        if b"sleep 1.5" in urllib.request.urlopen(req, timeout=5).read():
            break
        time.sleep(0.05)
    d.wait_lines(d.restart())
    d.wait_lines(d.restart())
    t.join(timeout=60)
    assert not t.is_alive()
    assert (result["r"].stdout, result["r"].exit_code) == ("late\n", 6)


def test_a_command_started_before_a_restart_is_reconnectable_after(d):
    sb = sandbox(d.url, d.token)
    h = sb.run("echo before; sleep 1; echo after; exit 2", wait=False)
    it = iter(h)
    first = next(it)
    assert first.data == "before\n"
    d.wait_lines(d.restart())
    # A second handle from the offsets, and the first one, which reconnects
    # by itself: both get the rest once.
    r = sb.reconnect(h.command_id, stdout_offset=len(first.data.encode()))
    assert (r.result.stdout, r.result.exit_code) == ("after\n", 2)
    assert "".join(c.data for c in it) == "after\n"
    assert h.result.exit_code == 2


def test_an_sse_stream_survives_a_restart(d, sse):
    # The one-way transport: the response ends with ServerShuttingDown and
    # the client resumes from its byte cursors against the restarted daemon.
    sb = sandbox(d.url, d.token)
    h = sb.run("for i in $(seq 0 9); do seq $((i*20000)) $((i*20000+19999)); sleep 0.1; done; exit 3",
               wait=False, timeout=120)
    got = read_through_a_restart(h, d, 50_000)
    want = "".join("%d\n" % i for i in range(200000))
    assert (len(got), digest(got)) == (len(want), digest(want))
    assert h.result.exit_code == 3


def test_kill_on_disconnect_survives_the_restarts_own_disconnect(d):
    # The restart closes the connection; that is not the client leaving.
    sb = sandbox(d.url, d.token)
    h = sb.run("for i in $(seq 0 9); do seq $((i*20000)) $((i*20000+19999)); sleep 0.1; done; exit 7",
               wait=False, timeout=120, kill_on_disconnect=True)
    got = read_through_a_restart(h, d, 50_000)
    want = "".join("%d\n" % i for i in range(200000))
    assert (len(got), digest(got)) == (len(want), digest(want))
    assert h.result.exit_code == 7
