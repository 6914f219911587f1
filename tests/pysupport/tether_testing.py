"""Test support shared by the Python suites (tests/compat, sdk/python/tests):
a real tether daemon on port 0, proxies that cut connections, the chaos
matrix's fault proxy and the CLI. TETHER_BIN names the daemon binary,
TETHER_FAULTPROXY the fault proxy's; relative paths are taken from the
repository root."""
import contextlib
import json
import os
import queue
import secrets
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The daemons, their commands, shells and PTYs get a HOME of their own: a
# suite must not run the user's rc files (a login shell killed while
# pyenv's rehash holds its lock leaves the lock behind, and every later
# login shell then waits 60 s for it). scripts/test-all.sh does the same
# for the whole run.
os.environ["HOME"] = tempfile.mkdtemp(prefix="tether-test-home-")


def _bin(env, default):
    return os.path.join(ROOT, os.environ.get(env, default))


class CutProxy:
    """Forwards to the daemon and cuts every connection after `budget` bytes
    from the daemon. `buffers` (bytes) caps the kernel buffers of the
    proxy's sockets, as a network path with bounded buffering: on loopback
    autotuning lets many MiB sit in flight, more than a client that cannot
    notice lost output may leave behind when its connection is cut."""

    def __init__(self, upstream_url, budget, buffers=None):
        host, port = upstream_url.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.budget = budget
        self.buffers = buffers
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
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if self.buffers:
                # Before connect: the window the daemon is offered is small.
                up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffers)
                down.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.buffers)
            up.connect(self.upstream)
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
    "listening" line per start and restart). Use as a context manager.
    `listen` and `token` start one where another was (a client's daemon
    coming back)."""

    def __init__(self, *args, cwd=None, listen="127.0.0.1:0", token=None):
        self.token = token or "compat-" + secrets.token_hex(8)
        self.root = cwd or tempfile.mkdtemp(prefix="tether-compat-")
        env = dict(os.environ, TETHER_TOKEN=self.token, TETHER_LOG="warn")
        self.proc = subprocess.Popen(
            [_bin("TETHER_BIN", "target/debug/tether"), "serve",
             "--listen", listen, *args],
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

    def reset_all(self):
        """Resets every open connection (RST both ways: SO_LINGER 0, close)."""
        with self.lock:
            socks, self.open = list(self.open), set()
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass


def tether_cli(d, *args, timeout=20):
    """Runs the tether CLI (TETHER_BIN) against daemon `d` (a Daemon or the
    `daemon` fixture's dict); returns the CompletedProcess (text)."""
    env = dict(os.environ, TETHER_URL=d["url"], TETHER_TOKEN=d["token"])
    binary = _bin("TETHER_BIN", "target/debug/tether")
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


class FaultProxy:
    """The chaos matrix's fault proxy, the `tether-faultproxy` binary
    (TETHER_FAULTPROXY), in front of a daemon: `reset` every open
    connection (RST), `refuse` new ones, `freeze` all traffic, `restore`,
    and `stats` (`accepted`, `refused`, `resets`, `mode`, `reconnected_ms`:
    from the last restore to the first daemon-to-client byte on a connection
    made after it). Every command waits for the proxy's answer (bounded).
    Use as a context manager."""

    def __init__(self, upstream_url):
        binary = _bin("TETHER_FAULTPROXY", "target/debug/tether-faultproxy")
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


class Overdue(BaseException):
    """A test ran past its limit. A BaseException, so an SDK's `except
    Exception` wrappers cannot turn it into one of their errors."""


@contextlib.contextmanager
def time_limit(seconds):
    """Bounds a test in time (SIGALRM, main thread): a hang is a failure,
    not a stall. The suites' autouse fixtures wrap every test in it."""
    def overdue(_signum, _frame):
        raise Overdue("the test took more than %ds" % seconds)

    old = signal.signal(signal.SIGALRM, overdue)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
