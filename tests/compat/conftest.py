"""A real tether daemon for the LangSmith client tests, a proxy that cuts
connections, and the chaos matrix's fault proxy. TETHER_BIN names the daemon
binary, TETHER_FAULTPROXY the fault proxy's (scripts/compat-tests.sh)."""
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest


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


class CutProxy:
    """Forwards to the daemon and cuts every connection after `budget` bytes
    from the daemon."""

    def __init__(self, upstream_url, budget):
        host, port = upstream_url.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.budget = budget
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(down, up, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, self.budget), daemon=True).start()

    def _pipe(self, src, dst, budget):
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if budget is not None and sent + len(data) > budget:
                    dst.sendall(data[: budget - sent])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.listener.close()


class Daemon:
    """A tether daemon on port 0 (the `daemon` fixture's, or a test's own to
    stop, restart or give options), every stdout line collected (one
    "listening" line per start and restart). Use as a context manager."""

    def __init__(self, *args, cwd=None):
        self.token = "compat-" + secrets.token_hex(8)
        self.root = cwd or tempfile.mkdtemp(prefix="tether-compat-")
        env = dict(os.environ, TETHER_TOKEN=self.token, TETHER_LOG="warn")
        self.proc = subprocess.Popen(
            [os.path.abspath(os.environ.get("TETHER_BIN", "target/debug/tether")), "serve",
             "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=self.root, text=True,
        )
        self.lines = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_lines(1)[0]
        assert line.startswith("tether: listening on "), line
        self.url = line.split("listening on ", 1)[1].strip()

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()

    def wait_lines(self, n, timeout=30):
        """Waits until the daemon has printed `n` lines; returns them."""
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.lines) >= n, timeout), self.lines
            return list(self.lines)

    def restart(self):
        """SIGUSR2 (a graceful restart); returns the line count that marks
        its end, for `wait_lines`."""
        n = len(self.lines)
        self.proc.send_signal(signal.SIGUSR2)
        return n + 1

    def __getitem__(self, key):
        # The same keys as the `daemon` fixture's dict.
        return {"url": self.url, "token": self.token, "root": self.root}[key]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=15)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


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


class CuttableProxy(CutProxy):
    """A CutProxy (with a budget that never runs out by default) that also
    cuts every open connection on demand."""

    def __init__(self, upstream_url, budget=1 << 62):
        self.open = set()
        self.lock = threading.Lock()
        super().__init__(upstream_url, budget)

    def _pipe(self, src, dst, budget):
        with self.lock:
            self.open.update((src, dst))
        super()._pipe(src, dst, budget)

    def cut_all(self):
        with self.lock:
            socks, self.open = list(self.open), set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def tether_cli(d, *args, timeout=20):
    """Runs the tether CLI (TETHER_BIN) against daemon `d` (a Daemon or the
    `daemon` fixture's dict); returns the CompletedProcess (text)."""
    env = dict(os.environ, TETHER_URL=d["url"], TETHER_TOKEN=d["token"])
    binary = os.path.abspath(os.environ.get("TETHER_BIN", "target/debug/tether"))
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=timeout)


class TimedDaemon(Daemon):
    """A Daemon that also notes when each stdout line came (`times`,
    time.monotonic), so a test can measure from the moment a restarted
    daemon listens again."""

    def __init__(self, *args, cwd=None):
        self.times = []
        super().__init__(*args, cwd=cwd)

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.times.append(time.monotonic())
                self.lines.append(line)
                self.cv.notify_all()


# The chaos daemon's keepalive: a silent peer is dropped after 3 s.
CHAOS_PEER_TIMEOUT = 3


@pytest.fixture
def chaos_daemon():
    """A daemon of the test's own (a cell may restart it) with a short
    keepalive (--peer-timeout 3 --ping-interval 1), its lines time-stamped."""
    with TimedDaemon("--peer-timeout", str(CHAOS_PEER_TIMEOUT), "--ping-interval", "1") as d:
        yield d


class FaultProxy:
    """The chaos matrix's fault proxy, the `tether-faultproxy` binary
    (TETHER_FAULTPROXY), in front of a daemon: `reset` every open
    connection (RST), `refuse` new ones, `freeze` all traffic, `restore`,
    and `stats` (`accepted`, `refused`, `resets`, `mode`, `reconnected_ms`:
    from the last restore to the first daemon-to-client byte on a connection
    made after it). Every command waits for the proxy's answer (bounded).
    Use as a context manager."""

    def __init__(self, upstream_url):
        binary = os.path.abspath(os.environ.get("TETHER_FAULTPROXY", "target/debug/tether-faultproxy"))
        self.proc = subprocess.Popen(
            [binary, upstream_url.removeprefix("http://")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        self.replies = queue.Queue()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        line = self._reply()
        assert line.startswith("listening on "), line
        self.url = "http://" + line.split("listening on ", 1)[1].strip()

    def _read(self):
        for line in self.proc.stdout:
            self.replies.put(line.strip())
        self.replies.put(None)

    def _reply(self, timeout=10):
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the fault proxy did not answer within %ss" % timeout) from None
        assert line is not None, "the fault proxy exited"
        return line

    def command(self, cmd):
        """Sends one command; returns the proxy's answer."""
        with self.lock:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
            reply = self._reply()
        assert cmd == "stats" or reply == "ok", (cmd, reply)
        return reply

    def reset(self):
        self.command("reset")

    def refuse(self):
        self.command("refuse")

    def freeze(self):
        self.command("freeze")

    def restore(self):
        """Forwards again; returns the moment (time.monotonic, taken just
        before the proxy switched)."""
        t = time.monotonic()
        self.command("restore")
        return t

    def stats(self):
        return json.loads(self.command("stats"))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
