"""deploy/container: no image can be built here (no Docker engine, no
registry), so the Dockerfile is read and its invariants checked, its
HEALTHCHECK command is run against a real daemon, and what the image relies
on, the daemon as PID 1 running as an unprivileged user, is done for real:
`unshare --pid --fork --mount-proc` makes a PID namespace whose first
process is the daemon (as uid 65534, like the image's non-root user), and
the tests look at it from the host's /proc. Needs root (unshare)."""
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from deploy_support import ROOT, DEPLOY, dockerfile_instructions, namespace_processes, proc_stat, tether_bin
from tether_testing import Daemon

DOCKERFILE = os.path.join(DEPLOY, "container", "Dockerfile")
#: The image's user stands in as `nobody` here (any non-root uid will do).
UID = 65534


def stages():
    """The Dockerfile's stages: [(FROM arguments, [(KEYWORD, args), ...])]."""
    out = []
    for kw, args in dockerfile_instructions(DOCKERFILE):
        if kw == "FROM":
            out.append((args, []))
        else:
            assert out, "an instruction before the first FROM: %s" % kw
            out[-1][1].append((kw, args))
    return out


def last(instrs, kw):
    found = [a for k, a in instrs if k == kw]
    assert found, "no %s" % kw
    return found[-1]


def test_the_dockerfile_builds_in_one_stage_and_runs_in_another():
    st = stages()
    assert len(st) >= 2, "not multi-stage"
    build_from, build = st[0]
    image, _, name = build_from.partition(" AS ")
    assert image.startswith("rust:") and name.strip() == "build", build_from
    cargo = [a for k, a in build if k == "RUN" and "cargo build" in a]
    assert cargo and all(f in cargo[0] for f in ("--release", "--locked", "-p tether")), cargo
    run_from, run = st[-1]
    assert run_from.startswith("debian:") and run_from.endswith("-slim"), run_from
    assert any(k == "COPY" and a.startswith("--from=build ") for k, a in run)
    # No init: the daemon reaps and handles SIGTERM as PID 1 (tested below).
    assert not any("tini" in a or "dumb-init" in a for _, a in run)


def test_the_image_runs_tether_serve_as_a_non_root_user_on_port_7070():
    _, run = stages()[-1]
    user = last(run, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, user
    useradd = [a for k, a in run if k == "RUN" and "useradd" in a]
    assert useradd and "--uid %s" % user in useradd[0], useradd
    entry = json.loads(last(run, "ENTRYPOINT"))
    assert os.path.basename(entry[0]) == "tether" and entry[1:] == ["serve"], entry
    assert "7070" in last(run, "EXPOSE").split()
    env = " ".join(a for k, a in run if k == "ENV")
    assert "TETHER_LISTEN=0.0.0.0:7070" in env, env
    # The token never baked into the image.
    assert "TETHER_TOKEN=" not in env


def healthcheck_argv():
    _, run = stages()[-1]
    hc = last(run, "HEALTHCHECK")
    cmd = hc[hc.index("CMD ") + 4:]
    return json.loads(cmd)


def test_the_healthcheck_passes_on_a_live_daemon_and_fails_without_one():
    argv = healthcheck_argv()
    assert any("7070" in a for a in argv)
    with Daemon() as d:
        port = d.url.rsplit(":", 1)[1]
        live = [a.replace("7070", port) for a in argv]
        p = subprocess.run(live, capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, p.stderr
    # The daemon is gone: nothing listens on its port any more.
    p = subprocess.run(live, capture_output=True, text=True, timeout=10)
    assert p.returncode != 0


def test_dockerignore_keeps_what_the_build_needs_and_drops_target():
    patterns = [
        line.strip().rstrip("/")
        for line in open(os.path.join(ROOT, ".dockerignore"))
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path):
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pat in patterns:
            for p in prefixes:
                if fnmatch.fnmatch(p, pat) or (pat.startswith("**/") and fnmatch.fnmatch(parts[-1] if p == path else p.split("/")[-1], pat[3:])):
                    return True
        return False

    needed = ["Cargo.toml", "Cargo.lock", "tests/Cargo.toml", "web/package.json", "web/package-lock.json", "web/build.mjs"]
    for crate in os.listdir(os.path.join(ROOT, "crates")):
        needed += ["crates/%s/Cargo.toml" % crate, "crates/%s/src/lib.rs" % crate]
    for path in needed:
        assert not ignored(path), path
    for path in ["target/debug/tether", ".git/HEAD", "web/node_modules/x/package.json"]:
        assert ignored(path), path


# --- PID 1 --------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")


_pid1_bin = None


def pid1_binary():
    """The daemon binary, or a copy of it that uid 65534 can run: the
    workspace may sit below a directory only root may enter."""
    global _pid1_bin
    if _pid1_bin is None:
        probe = ["setpriv", "--reuid=%d" % UID, "--regid=%d" % UID, "--clear-groups", "--", tether_bin(), "--version"]
        if subprocess.run(probe, capture_output=True, timeout=20).returncode == 0:
            _pid1_bin = tether_bin()
        else:
            d = tempfile.mkdtemp(prefix="tether-pid1-bin-")
            os.chmod(d, 0o755)
            _pid1_bin = shutil.copy(tether_bin(), os.path.join(d, "tether"))
    return _pid1_bin


class Pid1Daemon:
    """The daemon as PID 1 of a new PID namespace, as uid 65534 with a HOME
    of its own and no TETHER_TOKEN: it makes its token file, as in the
    image. JSON logs to a file. `pid` is its host pid."""

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="tether-pid1-")
        os.chown(self.home, UID, UID)
        os.chmod(self.home, 0o700)
        self.log = open(os.path.join(self.home, "..", os.path.basename(self.home) + ".log"), "w+")
        env = {"HOME": self.home, "PATH": "/usr/bin:/bin", "TETHER_LISTEN": "127.0.0.1:0", "TETHER_LOG": "info"}
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc",
             "setpriv", "--reuid=%d" % UID, "--regid=%d" % UID, "--clear-groups", "--",
             pid1_binary(), "serve", "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=self.home, text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("tether: listening on http://"), (line, self.logs())
        self.url = line.split("listening on ", 1)[1].strip()
        # unshare's one child is the daemon (setpriv exec'd it).
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            (self.pid,) = [int(p) for p in f.read().split()]
        with open(os.path.join(self.home, ".config/tether/token")) as f:
            self.token = f.read().strip()

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def json_logs(self):
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def exec(self, command, timeout=30):
        """POST /v1/exec: the decoded answer (or the error body) and status."""
        req = urllib.request.Request(
            self.url + "/v1/exec", data=json.dumps({"command": command}).encode(),
            headers={"Authorization": "Bearer " + self.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # unshare; the daemon as PID 1 goes with it (--kill-child is not set: kill it too)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def pid1():
    d = Pid1Daemon()
    yield d
    d.stop()


def wait_for(what, pred, timeout=10, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(step)


def in_background(fn):
    """Runs fn in a thread; returns a function that joins it and returns its
    result (or raises what it raised)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (handed to the caller)
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=30):
        t.join(timeout)
        assert not t.is_alive(), "still running"
        if "error" in box:
            raise box["error"]
        return box["value"]

    join.alive = t.is_alive
    return join


@needs_root
def test_the_daemon_runs_as_pid_1_unprivileged_and_makes_its_token_file(pid1):
    with open("/proc/%d/status" % pid1.pid) as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    assert status["NSpid"].split()[-1] == "1", status["NSpid"]
    assert status["Uid"].split()[0] == str(UID)
    st = os.stat(os.path.join(pid1.home, ".config/tether/token"))
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, UID)
    # Its commands see it as PID 1 and run as its user.
    code, r = pid1.exec("cat /proc/1/comm; id -u")
    assert code == 200 and r["exit_code"] == 0, r
    assert r["stdout"] == "tether\n%d\n" % UID


@needs_root
def test_pid_1_reaps_the_orphans_its_commands_leave(pid1):
    # Each subshell forks `sleep 0.1` into the background and exits: the
    # sleep is orphaned, re-parented to the daemon (PID 1 and subreaper),
    # and a zombie once it exits until the daemon reaps it. The command
    # itself lives on, so what reaps them is the daemon, not its end.
    done = in_background(lambda: pid1.exec("for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 4"))

    def zombies():
        return [p for p, (state, _) in namespace_processes(pid1.pid).items() if state == "Z"]

    seen = wait_for("the orphans to exit (zombies)", zombies, timeout=3)
    assert all(proc_stat(p)[1] == pid1.pid for p in seen if proc_stat(p)), "a zombie whose parent is not the daemon"
    wait_for("the daemon to reap its orphans", lambda: not zombies(), timeout=3)
    assert done.alive(), "the command ended first: the test proves nothing"
    code, r = done()
    assert code == 200 and r["exit_code"] == 0, r
    assert not zombies()


@needs_root
def test_sigterm_to_pid_1_kills_its_commands_and_exits_0_promptly(pid1):
    done = in_background(lambda: pid1.exec("sleep 300 & sleep 300; wait"))

    def sleeps():
        return {p: proc_stat(p)[2] for p, (_, comm) in namespace_processes(pid1.pid).items() if comm == "sleep"}

    commands = wait_for("both sleeps to run", lambda: (lambda s: s if len(s) == 2 else None)(sleeps()))
    t = time.monotonic()
    os.kill(pid1.pid, signal.SIGTERM)
    rc = pid1.proc.wait(timeout=15)
    took = time.monotonic() - t
    # unshare exits with the daemon's status.
    assert rc == 0, (rc, pid1.logs()[-2000:])
    assert took < 5, "the daemon took %.1fs to stop" % took
    # The client was answered, not cut off: 503 shutting_down (or, had the
    # command's end won the race, its record: killed).
    code, r = done()
    assert (code, r.get("code")) == (503, "shutting_down") or r.get("reason") == "killed", (code, r)
    # The daemon killed the command itself before it exited (the kernel
    # would have killed what PID 1 left, but said nothing).
    finished = [e for e in pid1.json_logs() if e.get("fields", {}).get("message") == "command finished"]
    assert finished and finished[0]["fields"].get("reason") == "Killed", pid1.logs()[-2000:]
    assert any(e.get("fields", {}).get("message") == "shutdown complete" for e in pid1.json_logs())
    for pid, start in commands.items():
        st = proc_stat(pid)
        assert st is None or st[2] != start, "command process %d outlived the daemon" % pid


@needs_root
def test_sigusr2_to_pid_1_restarts_it_in_place_keeping_its_commands(pid1):
    # `docker kill -s USR2` and the unit's ExecReload: the daemon re-execs
    # itself as PID 1, and a running command is still its own afterwards.
    pending = in_background(lambda: pid1.exec("sleep 20", timeout=25))

    def sleeper():
        s = [p for p, (_, comm) in namespace_processes(pid1.pid).items() if comm == "sleep"]
        return s[0] if s else None

    pid = wait_for("the command to run", sleeper)
    start = proc_stat(pid)[2]
    os.kill(pid1.pid, signal.SIGUSR2)
    line = pid1.proc.stdout.readline()
    assert line.strip() == "tether: listening on " + pid1.url, (line, pid1.logs()[-2000:])
    assert pid1.proc.poll() is None
    with open("/proc/%d/status" % pid1.pid) as f:
        assert [l for l in f if l.startswith("NSpid:")][0].split()[-1] == "1"
    assert proc_stat(pid)[2] == start, "the command did not survive the restart"
    # And it runs new ones, as PID 1 still.
    code, r = pid1.exec("cat /proc/1/comm")
    assert code == 200 and r["stdout"] == "tether\n", r
    assert any(e.get("fields", {}).get("message") == "restarted: took over the previous daemon's commands"
               for e in pid1.json_logs()), pid1.logs()[-2000:]
    # The one-shot request in flight was answered as PROTOCOL.md says: 503
    # shutting_down (the command is kept, its output not returned).
    code, r = pending()
    assert (code, r.get("code")) == (503, "shutting_down"), (code, r)
