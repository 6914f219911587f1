"""tether behind reverse proxies: Debian's nginx and Caddy in front of real
daemons, each configured from the documented file in deploy/proxy/
(nginx.conf with its ${...} placeholders filled in, the Caddyfile as it
is, with its {$...} environment placeholders set). TETHER_BIN names the
daemon (and CLI) binary (scripts/proxy-tests.sh).

- `daemons`: two daemons, `--sandbox-id a` and `b`, for the module;
- `front`: nginx or Caddy (the test's parameter) with `/` and `/s/a/` in
  front of daemon a and `/s/b/` in front of daemon b;
- `start_front(kind, tether=, a=, b=)`: a front of the test's own (e.g.
  with a cutting proxy between it and a daemon);
- `CountingProxy`: a CuttableProxy that counts the bytes it forwards
  towards the daemon, to see a request body arrive while it is sent."""
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

from tether_testing import ROOT, CuttableProxy, Daemon, FaultProxy, tether_cli  # noqa: E402, F401 (the tests import them from here)
from tether_fixtures import bounded_test  # noqa: E402, F401 (fixture)

DEPLOY = os.path.join(ROOT, "deploy", "proxy")
#: How long a proxy may take to come up.
START_LIMIT = 15
#: Tries at a free port (another process may take the one picked).
PORT_TRIES = 5


def free_port():
    """A port nothing listens on now (nginx cannot listen on port 0, so a
    free one is picked here; a start that loses it to another process is
    retried)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def hostport(url):
    return url.removeprefix("http://").rstrip("/")


class _Front:
    """A proxy process; its stderr lines are collected (`lines`), and
    `wait_for(pattern)` waits for one to match."""

    kind = None

    def _spawn(self, argv, env=None, cwd=None):
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        self.lines = []
        self.cv = threading.Condition()
        self.eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def _wait_start(self, ready, conflict):
        """True once a line matches `ready`, False if the process ended on
        a port conflict; raises on anything else."""
        def seen():
            text = "".join(self.lines)
            return re.search(ready, text) or re.search(conflict, text) or self.eof

        with self.cv:
            assert self.cv.wait_for(seen, START_LIMIT), "%s did not start: %s" % (self.kind, self.lines)
            text = "".join(self.lines)
        if re.search(ready, text) and self.proc.poll() is None:
            return True
        self.stop()
        if re.search(conflict, text):
            return False
        raise AssertionError("%s did not start: %s" % (self.kind, text))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Nginx(_Front):
    """Debian's nginx in the foreground, unprivileged ports, a prefix of its
    own; its http block includes deploy/proxy/nginx.conf with the
    placeholders filled in (`tether`, `a`, `b`: the daemons' URLs)."""

    kind = "nginx"

    def __init__(self, tether, a, b):
        self.dir = tempfile.mkdtemp(prefix="tether-nginx-")
        with open(os.path.join(DEPLOY, "nginx.conf")) as f:
            template = f.read()
        for _ in range(PORT_TRIES):
            self.port = free_port()
            values = {
                "PROXY_LISTEN": "127.0.0.1:%d" % self.port,
                "TETHER_UPSTREAM": hostport(tether),
                "SANDBOX_A_UPSTREAM": hostport(a),
                "SANDBOX_B_UPSTREAM": hostport(b),
            }
            conf = template
            for name, value in values.items():
                # What `envsubst '${NAME} ...'` does; nginx's own $vars stay.
                conf = conf.replace("${%s}" % name, value)
            left = re.findall(r"\$\{[A-Z_]+\}", conf)
            assert not left, "placeholders the test does not fill: %s" % left
            with open(os.path.join(self.dir, "tether.conf"), "w") as f:
                f.write(conf)
            temp = "".join(
                "%s_temp_path %s;\n" % (k, os.path.join(self.dir, k)) for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            # Workers of a root master run as this user (nginx's default,
            # nobody, could not write the temp dirs above).
            user = "user root;\n" if os.geteuid() == 0 else ""
            with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
                f.write(
                    "%sworker_processes 1;\nerror_log stderr notice;\nevents {}\nhttp {\naccess_log off;\n%sinclude %s;\n}\n"
                    % (user, temp, os.path.join(self.dir, "tether.conf"))
                )
            self._spawn([
                "nginx", "-e", "stderr", "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"),
                "-g", "daemon off; pid %s;" % os.path.join(self.dir, "nginx.pid"),
            ])
            # Workers start once the listening sockets are open.
            if self._wait_start(r"start worker process", r"Address already in use"):
                self.url = "http://127.0.0.1:%d" % self.port
                return
        raise AssertionError("nginx found no free port in %d tries" % PORT_TRIES)


class Caddy(_Front):
    """Debian's Caddy running deploy/proxy/Caddyfile unchanged, its
    environment placeholders set (no admin endpoint, no certificates)."""

    kind = "caddy"

    def __init__(self, tether, a, b):
        self.dir = tempfile.mkdtemp(prefix="tether-caddy-")
        for _ in range(PORT_TRIES):
            self.port = free_port()
            env = dict(
                os.environ,
                PROXY_BIND="127.0.0.1",
                PROXY_PORT=str(self.port),
                TETHER_UPSTREAM=hostport(tether),
                SANDBOX_A_UPSTREAM=hostport(a),
                SANDBOX_B_UPSTREAM=hostport(b),
                XDG_DATA_HOME=os.path.join(self.dir, "data"),
                XDG_CONFIG_HOME=os.path.join(self.dir, "config"),
            )
            self._spawn(
                ["caddy", "run", "--config", os.path.join(DEPLOY, "Caddyfile"), "--adapter", "caddyfile"],
                env=env, cwd=self.dir,
            )
            if self._wait_start(r"serving initial configuration", r"address already in use"):
                self.url = "http://127.0.0.1:%d" % self.port
                return
        raise AssertionError("caddy found no free port in %d tries" % PORT_TRIES)


FRONTS = {"nginx": Nginx, "caddy": Caddy}


def have(kind):
    return shutil.which(kind) is not None


@pytest.fixture(scope="module")
def daemons():
    with Daemon("--sandbox-id", "a") as a, Daemon("--sandbox-id", "b", token=a.token) as b:
        yield {"a": a, "b": b}


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def front(request, daemons):
    kind = request.param
    if not have(kind):
        pytest.skip("%s is not installed (scripts/proxy-tests.sh installs it)" % kind)
    with FRONTS[kind](daemons["a"].url, daemons["a"].url, daemons["b"].url) as f:
        yield f


@pytest.fixture
def start_front():
    """Starts fronts of the test's own; stops them at its end."""
    with contextlib.ExitStack() as stack:
        def start(kind, tether, a, b):
            if not have(kind):
                pytest.skip("%s is not installed (scripts/proxy-tests.sh installs it)" % kind)
            return stack.enter_context(FRONTS[kind](tether, a, b))

        yield start


class CountingProxy(CuttableProxy):
    """A CuttableProxy that counts the connections it took (`connections`)
    and the bytes it has forwarded towards the daemon (`up`); `wait_up(n)`
    waits until at least n have gone."""

    def __init__(self, upstream_url):
        self.up = 0
        self.connections = 0
        self.cv = threading.Condition()
        super().__init__(upstream_url)

    def _pipe(self, src, dst, budget):
        if budget is not None:
            return super()._pipe(src, dst, budget)
        # Towards the daemon: the same loop, counting.
        with self.lock:
            self.open.update((src, dst))
        with self.cv:
            self.connections += 1
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                with self.cv:
                    self.up += len(data)
                    self.cv.notify_all()
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def wait_up(self, n, timeout):
        with self.cv:
            return self.cv.wait_for(lambda: self.up >= n, timeout)
