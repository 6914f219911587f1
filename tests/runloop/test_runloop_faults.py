"""Faults under the Runloop SDK: an output stream that stalls (the SDK's
read timeout reconnects with `?offset=`) resumes without loss or
duplicate; a request whose answer is lost is resent with the same
`x-request-id` and runs once; a graceful restart in the middle of an
execution and of a named shell's life."""
import socket
import threading
import time

from conftest import Collect, Daemon, in_shell, sdk_for, tether_cli, url
from tether_testing import CutProxy

LINES = "".join("line-%d\n" % i for i in range(1, 301))
SLOW = "for i in $(seq 1 300); do echo line-$i; sleep 0.01; done"


class StallProxy(CutProxy):
    """Forwards to the daemon; `stall_streams()` silently drops from then on
    everything on the connections open at that moment that carry an output
    stream (as a path whose packets are lost), while new connections
    flow."""

    def __init__(self, upstream_url):
        self.streams = []
        self.stalled = set()
        self.lock = threading.Lock()
        super().__init__(upstream_url, None)

    def _pipe(self, src, dst, budget):
        first = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if first and b"stream_stdout_updates" in data:
                    with self.lock:
                        self.streams.append((src, dst, data.split(b"\r\n", 1)[0].decode()))
                first = False
                with self.lock:
                    if src in self.stalled or dst in self.stalled:
                        continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall_streams(self):
        with self.lock:
            for src, dst, _ in self.streams:
                self.stalled.update((src, dst))


def test_a_stalled_output_stream_resumes_from_its_offset(daemon):
    proxy = StallProxy(daemon.url)
    s = sdk_for(daemon, base=proxy.url + "/compat/runloop", timeout=2.0)
    devbox = s.devbox.from_id("local")
    out = Collect()
    ex = devbox.cmd.exec_async(SLOW, stdout=out)
    out.wait_for(lambda t: t.count("\n") >= 50)
    proxy.stall_streams()
    r = ex.result()
    assert r.exit_code == 0
    out.wait_for(lambda t: t.count("\n") >= 300)
    assert out.text() == LINES
    requests = [line for _, _, line in proxy.streams]
    assert len(requests) >= 2, requests
    assert "offset=" in requests[1], requests
    s.close()


class CutFirstAnswer(CutProxy):
    """Cuts the first connection whose request contains `marker` as soon as
    the daemon starts to answer it (the request was served, the answer is
    lost); the client then resends."""

    def __init__(self, upstream_url, marker):
        self.marker = marker
        self.pending = None
        self.cut = threading.Event()
        self.lock = threading.Lock()
        super().__init__(upstream_url, None)

    def _pipe(self, src, dst, budget):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if not self.cut.is_set() and self.marker in data and self.pending is None:
                        self.pending = (src, dst)
                    elif self.pending is not None and (dst, src) == self.pending and not self.cut.is_set():
                        self.cut.set()
                        for s in (src, dst):
                            s.shutdown(socket.SHUT_RDWR)
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_an_execute_whose_answer_is_lost_is_resent_and_runs_once(daemon, tmp_path):
    mark = tmp_path / "runs"
    proxy = CutFirstAnswer(daemon.url, b"execute_async")
    s = sdk_for(daemon, base=proxy.url + "/compat/runloop", max_retries=3)
    r = s.devbox.from_id("local").cmd.exec("echo run >> %s; echo ok" % mark)
    assert proxy.cut.is_set()
    assert r.stdout() == "ok\n"
    assert mark.read_text() == "run\n"
    s.close()


def test_a_stdin_send_whose_answer_is_lost_writes_once(daemon):
    proxy = CutFirstAnswer(daemon.url, b"send_std_in")
    s = sdk_for(daemon, base=proxy.url + "/compat/runloop", max_retries=3)
    ex = s.devbox.from_id("local").cmd.exec_async("cat", attach_stdin=True)
    ex.send_std_in("once\n")
    assert proxy.cut.is_set()
    ex.close_std_in()
    assert ex.result().stdout() == "once\n"
    s.close()


def test_a_graceful_restart_in_the_middle_of_an_execution():
    with Daemon() as d:
        s = sdk_for(d)
        devbox = s.devbox.from_id("local")
        run, _ = in_shell(devbox, "across")
        run("cd /tmp && export KEPT=yes")
        out = Collect()
        ex = devbox.cmd.exec_async("echo before; sleep 2; echo after", stdout=out)
        out.wait_for(lambda t: "before" in t)
        n = d.restart()
        d.wait_lines(n)
        r = ex.result()
        assert (r.exit_code, r.stdout()) == (0, "before\nafter\n")
        out.wait_for(lambda t: t == "before\nafter\n")
        # The idle named shell was handed over with its state.
        assert run("pwd; echo $KEPT").stdout() == "/tmp\nyes\n"
        assert url(d)
        s.close()


def test_a_restart_while_cmd_exec_long_polls():
    with Daemon() as d:
        s = sdk_for(d)
        devbox = s.devbox.from_id("local")
        result = {}

        def run():
            result["r"] = devbox.cmd.exec("sleep 2; echo through")

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 20
        while "sleep 2" not in tether_cli(d, "ls").stdout:
            assert time.monotonic() < deadline
        n = d.restart()
        d.wait_lines(n)
        t.join(40)
        assert result["r"].stdout() == "through\n"
        s.close()
