"""A silent network (the chaos matrix's fault proxy frozen: nothing passes,
nothing closes) on either side of nginx and Caddy, while a paced
command streams more than the client's window. Behind a proxy the
daemon cannot see the client go (the proxy keeps its own connection
open), so this checks that the stale connection holds nothing back: the
client notices the silence itself, reconnects through the proxy,
resumes byte-exact, and the command finishes promptly."""
import time

import pytest
import tether
from conftest import FaultProxy

#: The client's keepalive: a connection silent for three of them is dropped.
OPTIONS = tether.Options(backoff_initial=0.05, backoff_max=0.5, keepalive=1.0, reconnect_for=60)
WAIT = 20
#: About 15 MB of output: several windows (2 MiB) behind the freeze.
N = 2_000_000


def _wait_accepted(proxy, n):
    """Waits until the fault proxy has taken `n` connections (the frozen
    one and a retry: the client noticed the silence). Polled: the proxy
    reports counts only when asked."""
    deadline = time.monotonic() + WAIT
    while proxy.stats()["accepted"] < n:
        assert time.monotonic() < deadline, proxy.stats()
        time.sleep(0.05)


@pytest.mark.parametrize("side", ["client", "daemon"])
def test_a_streaming_run_survives_a_silent_network(front, daemons, start_front, side):
    a = daemons["a"]
    with FaultProxy(a.url if side == "daemon" else front.url) as fp:
        if side == "daemon":
            url = start_front(front.kind, a.url, fp.url, daemons["b"].url).url + "/s/a"
        else:
            url = fp.url + "/s/a"
        with tether.Client(url, token=a.token, options=OPTIONS) as c:
            h = c.run("seq 1 %d" % N, wait=False)
            got = bytearray()
            back = None
            # One loop: the fault is made from inside it (leaving a loop
            # over a blocking handle and iterating again loses events, see
            # test_leaving_a_handle_loop_loses_no_output).
            for ev in h:
                assert isinstance(ev, tether.OutputEvent), ev
                assert ev.offset == len(got), (ev.offset, len(got))
                got += ev.data
                if back is None and len(got) >= 100_000:
                    fp.freeze()
                    _wait_accepted(fp, 2)
                    back = fp.restore()
            r = h.wait(timeout=WAIT)
            done = time.monotonic() - back
            assert r.exit_code == 0
            assert bytes(got) == b"".join(b"%d\n" % i for i in range(1, N + 1))
            assert c.reconnects >= 1
            # Far below the daemon's peer timeout (45 s): the stale
            # connection behind the proxy did not pace the command.
            assert done < 10, done


def test_leaving_a_handle_loop_loses_no_output(front, daemons):
    a = daemons["a"]
    with tether.Client(front.url + "/s/a", token=a.token) as c:
        # Ten writes 20 ms apart: ten output events.
        h = c.run("for i in $(seq 1 10); do echo chunk-$i; sleep 0.02; done", wait=False)
        # Let the whole output reach the client before taking any: another
        # client waits for the end, then a round trip on this connection
        # comes back behind the output sent on it.
        with tether.Client(front.url + "/s/a", token=a.token) as other:
            assert other.attach(h.command_id).wait(timeout=WAIT).exit_code == 0
        c.status(h.command_id)
        got = bytearray()
        for ev in h:
            got += ev.data
            break
        assert got == b"chunk-1\n"
        for ev in h:
            assert ev.offset == len(got), (ev.offset, len(got))
            got += ev.data
        assert bytes(got) == b"".join(b"chunk-%d\n" % i for i in range(1, 11))
