"""The `tether` CLI (TETHER_BIN) through nginx and Caddy: at the root
(`--url http://proxy`), under a prefix, and an attach resumed across a
cut between the CLI and the proxy."""
import hashlib
import os
import subprocess
import threading
import time

import pytest
from conftest import ROOT, CountingProxy

WAIT = 20
BINARY = os.path.join(ROOT, os.environ.get("TETHER_BIN", "target/debug/tether"))


def cli(url, token, *args, timeout=WAIT):
    env = dict(os.environ, TETHER_TOKEN=token)
    env.pop("TETHER_URL", None)
    return subprocess.run([BINARY, "--url", url, *args], env=env, capture_output=True, text=True, timeout=timeout)


def ws_url(url):
    return url.replace("http://", "ws://", 1)


def test_cli_at_the_root(front, daemons):
    a = daemons["a"]
    r = cli(front.url, a.token, "exec", "--", "sh", "-c", "echo hi; exit 4")
    assert (r.returncode, r.stdout) == (4, "hi\n"), r.stderr
    r = cli(front.url, a.token, "exec", "--detach", "--name", "cli-root", "--", "echo", "detached")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    r = cli(front.url, a.token, "ls")
    assert r.returncode == 0 and cid in r.stdout, (r.stdout, r.stderr)
    r = cli(front.url, a.token, "attach", cid)
    assert (r.returncode, r.stdout) == (0, "detached\n"), r.stderr


def test_cli_under_a_prefix(front, daemons):
    a = daemons["a"]
    for url in (front.url + "/s/a", front.url + "/s/a/"):
        r = cli(url, a.token, "exec", "--", "echo", "hi")
        assert (r.returncode, r.stdout) == (0, "hi\n"), (url, r.stderr)
        r = cli(url, a.token, "ls")
        assert r.returncode == 0, (url, r.stderr)


def test_cli_under_a_prefix_with_the_websocket_url(front, daemons):
    # What works today: the full ws://.../s/a/v1/ws URL for the WebSocket
    # subcommands (exec, ls, attach), http://.../s/a for the file ones.
    a = daemons["a"]
    url = ws_url(front.url) + "/s/a/v1/ws"
    r = cli(url, a.token, "exec", "--", "sh", "-c", 'echo "$TETHER_COMMAND_ID"')
    assert r.returncode == 0, r.stderr
    r = cli(url, a.token, "exec", "--detach", "--", "echo", "via-prefix")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    r = cli(url, a.token, "ls")
    assert r.returncode == 0 and cid in r.stdout, (r.stdout, r.stderr)
    r = cli(url, a.token, "attach", cid)
    assert (r.returncode, r.stdout) == (0, "via-prefix\n"), r.stderr
    # Daemon b does not hold it: a clean error, at once.
    r = cli(ws_url(front.url) + "/s/b/v1/ws", a.token, "attach", cid)
    assert r.returncode != 0
    assert cid in r.stderr and "no command" in r.stderr, r.stderr


def test_cli_cp_under_a_prefix(front, daemons, tmp_path):
    a, b = daemons["a"], daemons["b"]
    data = os.urandom(8 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    # A relative path: the daemon's own working directory (its root here),
    # so where the file lands shows which daemon the prefix reached.
    name = "cli-cp-%s.bin" % front.kind
    url = front.url + "/s/a"
    r = cli(url, a.token, "cp", str(src), ":" + name)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(a.root, name), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    assert not os.path.exists(os.path.join(b.root, name))
    back = tmp_path / "back.bin"
    r = cli(url, a.token, "cp", ":" + name, str(back))
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == data
    r = cli(front.url + "/s/b", a.token, "cat", ":" + name)
    assert r.returncode != 0 and "no such file" in r.stderr.lower(), r.stderr
    os.unlink(os.path.join(a.root, name))


def test_cli_attach_resumes_after_a_cut(front, daemons):
    # tether attach -> cutting proxy -> front -> daemon a; the cut lands
    # while the command waits, the rest comes over a new connection.
    a = daemons["a"]
    fifo = os.path.join(a.root, "cli-go-%s-%d" % (front.kind, time.monotonic_ns()))
    os.mkfifo(fifo)
    cutter = CountingProxy(front.url)
    proc = None
    try:
        r = cli(front.url, a.token, "exec", "--detach", "--", "sh", "-c",
                "seq 1 20000; read x < %s; seq 20001 60000" % fifo)
        assert r.returncode == 0, r.stderr
        cid = r.stdout.strip()
        env = dict(os.environ, TETHER_TOKEN=a.token)
        proc = subprocess.Popen([BINARY, "--url", cutter.url, "attach", cid], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = b"".join(b"%d\n" % i for i in range(1, 20001))
        got = proc.stdout.read(len(first))
        assert got == first
        assert cutter.connections == 1
        cutter.reset_all()
        # Released on a thread: opening a FIFO blocks until its reader is there.
        threading.Thread(target=lambda: open(fifo, "w").write("go\n"), daemon=True).start()
        rest, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
        assert got + rest == b"".join(b"%d\n" % i for i in range(1, 60001))
        # It did reconnect (the CLI says nothing when not on a terminal).
        assert cutter.connections >= 2, cutter.connections
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        cutter.close()
        os.unlink(fifo)
