"""Reconnects: connections cut again and again under a stream with stdin
flowing the other way, a kill during a cut, and a graceful restart of the
daemon, with the sync client and the async one. Nothing is lost or doubled."""

import hashlib
import os
import threading

import pytest
from tether_testing import CutProxy, Daemon, FaultProxy

import tether

FAST = tether.Options(backoff_initial=0.01, backoff_max=0.2, reconnect_for=60)


def test_cuts_during_a_20_mb_stream_with_stdin_lose_and_double_nothing(daemon, connect):
    # Every connection is cut after 3 MB from the daemon: a 20 MB stream
    # goes through at least six of them.
    proxy = CutProxy(daemon.url, 3 << 20)
    try:
        c = connect(proxy.url, daemon.token, options=FAST)
        data = os.urandom(20 << 20)
        h = c.run(["cat"], wait=False)
        out = hashlib.sha256()
        got = 0

        def feed():
            for i in range(0, len(data), 256 << 10):
                h.write_stdin(data[i : i + (256 << 10)])
            h.close_stdin()

        writer = threading.Thread(target=feed)
        writer.start()
        for ev in h:
            assert isinstance(ev, tether.OutputEvent), ev
            assert ev.offset == got, "output resumed at the wrong offset"
            out.update(ev.data)
            got += len(ev.data)
        writer.join(60)
        r = h.wait()
        assert got == len(data) and out.hexdigest() == hashlib.sha256(data).hexdigest()
        assert r.exit_code == 0 and r.lost_bytes == 0
        assert proxy.cuts >= 6 and c.reconnects >= 6
    finally:
        proxy.close()


def test_a_kill_during_a_cut_is_delivered_and_does_not_reattach(daemon, connect):
    with FaultProxy(daemon.url) as proxy:
        c = connect(proxy.url, daemon.token, options=FAST)
        h = c.run(["sleep", "60"], wait=False)
        cid = h.command_id
        assert c.status(cid).attached == 1
        proxy.refuse()
        proxy.reset()
        done = threading.Event()
        killer = threading.Thread(target=lambda: (h.kill(), done.set()))
        killer.start()
        assert not done.wait(0.3), "a kill returned while the daemon was unreachable"
        proxy.restore()
        killer.join(30)
        assert done.is_set()
        r = h.wait(timeout=30)
        assert r.reason == "killed" and r.signal == 9
        with tether.Client(daemon.url, token=daemon.token) as direct:
            assert direct.status(cid).attached == 0, "the killed command was attached again"


def test_a_graceful_restart_during_a_stream_is_invisible(connect):
    with Daemon() as d:
        c = connect(d.url, d.token, options=FAST)
        # 4 MB in 64 KiB writes, paced by the client; a restart in the middle.
        script = (
            "import sys\n"
            "for i in range(64):\n"
            "    sys.stdout.buffer.write(bytes([i]) * 65536)\n"
            "    sys.stdout.flush()\n"
        )
        h = c.run(["python3", "-c", script], wait=False)
        seen = 0
        restarted = None
        digest = hashlib.sha256()
        for ev in h:
            assert isinstance(ev, tether.OutputEvent) and ev.offset == seen
            digest.update(ev.data)
            seen += len(ev.data)
            if restarted is None and seen >= 1 << 20:
                restarted = d.restart()
                d.wait_lines(restarted)
        r = h.wait(timeout=60)
        expect = hashlib.sha256(b"".join(bytes([i]) * 65536 for i in range(64))).hexdigest()
        assert (seen, digest.hexdigest(), r.exit_code) == (4 << 20, expect, 0)
        assert c.reconnects >= 1
        # The same client goes on working against the new daemon.
        assert c.exec(["echo", "after"]).stdout == b"after\n"


def test_giving_up_raises_connection_lost(connect):
    with Daemon() as d:
        c = connect(d.url, d.token, options=tether.Options(backoff_initial=0.01, reconnect_for=0.5))
        h = c.run(["sleep", "60"], wait=False)
        d.stop()
        with pytest.raises(tether.ConnectionLost, match="reconnect"):
            h.wait(timeout=30)
        # The client is not spent: with the daemon away a call fails at once,
        # with a daemon back on the address it works again.
        with pytest.raises(tether.ConnectionLost, match="cannot connect"):
            c.exec(["true"])
        port = d.url.rsplit(":", 1)[1]
        with Daemon(listen=f"127.0.0.1:{port}", token=d.token) as again:
            assert again.url == d.url
            assert c.exec(["echo", "back"], check=True).stdout == b"back\n"
