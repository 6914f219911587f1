"""A real tether daemon for the LangSmith client tests, and a proxy that cuts
connections. TETHER_BIN names the daemon binary (scripts/compat-tests.sh)."""
import os
import secrets
import socket
import subprocess
import tempfile
import threading

import pytest


@pytest.fixture(scope="module")
def daemon():
    token = "compat-" + secrets.token_hex(8)
    root = tempfile.mkdtemp(prefix="tether-compat-")
    env = dict(os.environ, TETHER_TOKEN=token, TETHER_LOG="warn")
    proc = subprocess.Popen(
        [os.path.abspath(os.environ.get("TETHER_BIN", "target/debug/tether")), "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=root, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("tether: listening on "), line
    url = line.split("listening on ", 1)[1].strip()
    yield {"url": url, "token": token, "root": root}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def confined():
    """A daemon serving files only beneath `root` (--files-root), with a
    secret next to the root and symlinks inside pointing out to it."""
    token = "compat-" + secrets.token_hex(8)
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
    env = dict(os.environ, TETHER_TOKEN=token, TETHER_LOG="warn")
    proc = subprocess.Popen(
        [os.path.abspath(os.environ.get("TETHER_BIN", "target/debug/tether")), "serve",
         "--listen", "127.0.0.1:0", "--files-root", root],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=top, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("tether: listening on "), line
    url = line.split("listening on ", 1)[1].strip()
    yield {"url": url, "token": token, "root": root, "outside": outside}
    proc.terminate()
    proc.wait(timeout=10)


def sandbox(url, token):
    from langsmith.sandbox import Sandbox, SandboxClient

    dataplane = url + "/compat/langsmith"
    # api_endpoint points at the daemon too, so the token never goes to
    # api.smith.langchain.com; auto_delete=False: nothing to delete.
    client = SandboxClient(api_endpoint=dataplane, api_key=token, max_retries=0)
    return Sandbox.from_dict({"name": "tether", "dataplane_url": dataplane}, client=client, auto_delete=False)


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
