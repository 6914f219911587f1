"""Helpers shared by the Runta suites: trees to compare, a FIFO gate a
command waits on (so a test releases it on an event, never by sleeping),
and polling for a condition with a deadline."""
import hashlib
import os
import time


def make_tree(root):
    """A small tree with nested directories, binary and empty files and an
    executable; returns root."""
    os.makedirs(os.path.join(root, "a", "b", "c"))
    os.makedirs(os.path.join(root, "empty-dir"))
    with open(os.path.join(root, "top.txt"), "w") as f:
        f.write("top\n")
    with open(os.path.join(root, "a", "bin.dat"), "wb") as f:
        f.write(bytes(range(256)) * 1000)
    with open(os.path.join(root, "a", "b", "c", "deep file.txt"), "w") as f:
        f.write("deep\n")
    open(os.path.join(root, "a", "b", "empty"), "w").close()
    run = os.path.join(root, "a", "run.sh")
    with open(run, "w") as f:
        f.write("#!/bin/sh\necho run\n")
    os.chmod(run, 0o755)
    return root


def tree(root):
    """{relative path: (kind, mode bits, sha256)} for every entry below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            out[os.path.relpath(p, root)] = ("dir", None, None)
        for name in filenames:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = ("file", os.stat(p).st_mode & 0o777, digest)
    return out


def wait_for(cond, timeout=20, what="condition"):
    """Polls cond() until it is true (a state to observe, not an event we
    could await); fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Gate:
    """A FIFO a command blocks on (`gate.wait_cmd`) after it has touched
    `gate.started`; `open()` lets it go on."""

    def __init__(self, tmp):
        self.fifo = os.path.join(tmp, "gate")
        self.started = os.path.join(tmp, "started")
        os.mkfifo(self.fifo)
        self.wait_cmd = f"touch {self.started}; read line < {self.fifo}; echo released $line"

    def wait_started(self, timeout=20):
        wait_for(lambda: os.path.exists(self.started), timeout, "the command to start")

    def open(self):
        # Opening for write blocks until the command opens it for read.
        with open(self.fifo, "w") as f:
            f.write("go\n")


def observers_started(daemon, since_ms):
    """How many SDK observer reconnections (`control.sh watch`, not the
    first launch) the daemon has run since `since_ms`, from `tether ls`:
    the proof that a cut or a restart made the SDK reconnect."""
    import json

    from tether_testing import tether_cli

    ls = tether_cli(daemon, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    n = 0
    for c in json.loads(ls.stdout):
        argv = c.get("argv") or []
        if (c.get("labels", {}).get("runta.exec") and c.get("started_at_ms", 0) >= since_ms
                and len(argv) == 3 and argv[2].startswith("if test -f") and "control.sh watch" in argv[2]):
            n += 1
    return n
