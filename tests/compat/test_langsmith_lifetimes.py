"""Command lifetimes and run_config with the real `langsmith` client over
its default WebSocket transport (protocol/compat/langsmith.md sections 5.4,
5.10, 12.5), and the legacy one-shot POST /execute (section 7), which the
pinned client no longer sends, driven with plain urllib."""
import json
import os
import pwd
import signal
import time
import urllib.error
import urllib.request

import pytest
from langsmith.sandbox import RunConfig, SandboxOperationError

from conftest import CuttableProxy, sandbox


@pytest.fixture(autouse=True)
def websocket_transport(monkeypatch):
    monkeypatch.delenv("LANGSMITH_EXPERIMENTAL_FEATURES", raising=False)


def alive(pid):
    """Whether the process exists and is not a zombie. A process reaped
    between the open and the read makes the read fail with ESRCH."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(pred, what, limit=15.0):
    deadline = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def start_with_pid(sb, pidfile, **kwargs):
    """A command that writes its pid, says `ready` and sleeps; returns the
    handle (its first chunk read) and the pid."""
    h = sb.run("echo $$ > %s; echo ready; exec sleep 100" % pidfile, wait=False, **kwargs)
    assert next(iter(h)).data == "ready\n"
    return h, int(pidfile.read_text())


def test_kill_on_disconnect_kills_when_the_connection_drops(daemon, tmp_path):
    proxy = CuttableProxy(daemon["url"])
    try:
        h, pid = start_with_pid(sandbox(proxy.url, daemon["token"]), tmp_path / "pid", kill_on_disconnect=True)
        assert alive(pid)
        proxy.cut_all()
        wait_until(lambda: not alive(pid), "killed when its only client went away")
        # Still reconnectable for its TTL, with the kill's exit code.
        assert sandbox(daemon["url"], daemon["token"]).reconnect(h.command_id).result.exit_code == 137
    finally:
        proxy.close()


def test_idle_timeout_kills_a_detached_command_and_minus_one_never(daemon, tmp_path):
    proxy = CuttableProxy(daemon["url"])
    try:
        sb = sandbox(proxy.url, daemon["token"])
        h1, pid1 = start_with_pid(sb, tmp_path / "p1", idle_timeout=1)
        h2, pid2 = start_with_pid(sb, tmp_path / "p2", idle_timeout=-1)
        t0 = time.monotonic()
        proxy.cut_all()
        wait_until(lambda: not alive(pid1), "killed about 1 s after its client went away", limit=10)
        assert time.monotonic() - t0 >= 0.95, "killed before its idle timeout"
        assert alive(pid2), "idle_timeout=-1 must never kill"
        direct = sandbox(daemon["url"], daemon["token"])
        assert direct.reconnect(h1.command_id).result.exit_code == 137
        os.kill(pid2, signal.SIGKILL)
        assert direct.reconnect(h2.command_id).result.exit_code == 137
    finally:
        proxy.close()


def test_run_config_work_dir_and_env_vars(sb, tmp_path):
    r = sb.run('pwd; echo "$V"', run_config={"work_dir": str(tmp_path), "env_vars": {"V": "x y"}})
    assert (r.stdout, r.exit_code) == ("%s\nx y\n" % tmp_path, 0)
    r = sb.run('pwd; echo "$W"', run_config=RunConfig(work_dir="/", env_vars={"W": "é"}))
    assert r.stdout == "/\né\n"


def test_run_config_user_must_be_the_daemons_own(sb):
    uid, gid = os.getuid(), os.getgid()
    me = pwd.getpwuid(uid).pw_name
    for user in (me, str(uid), "%s:%d" % (me, gid), "%d:%d" % (uid, gid)):
        r = sb.run("id -u", run_config={"user": user})
        assert r.stdout == "%d\n" % uid, user
    other = "nobody" if uid != 65534 else "root"
    with pytest.raises(SandboxOperationError) as e:
        sb.run("id -u", run_config={"user": other})
    assert e.value.error_type == "CommandError"
    assert "run_config.user" in str(e.value)


def post_execute(daemon, body, key=None):
    """POST /compat/langsmith/execute: (status, JSON body or text)."""
    req = urllib.request.Request(
        daemon["url"] + "/compat/langsmith/execute", data=json.dumps(body).encode(),
        headers={"X-Api-Key": daemon["token"] if key is None else key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def test_legacy_execute_answers_output_and_exit_code(daemon, tmp_path):
    marker = "legacy-%d" % time.monotonic_ns()
    status, body = post_execute(daemon, {
        "command": "echo héllo; printf 'a\\xffb' >&2; : %s; exit 3" % marker,
        "timeout": 60, "shell": "/bin/bash"})
    assert status == 200
    assert body == {"stdout": "héllo\n", "stderr": "a\ufffdb", "exit_code": 3}
    # A one-shot command: forgotten once it ended (by its actor, right
    # after the answer).
    def listed():
        req = urllib.request.Request(daemon["url"] + "/v1/commands", headers={"X-Api-Key": daemon["token"]})
        return [c for c in json.loads(urllib.request.urlopen(req, timeout=10).read())
                if marker in " ".join(c["argv"])]
    wait_until(lambda: not listed(), "a legacy command forgotten at its exit", limit=5)

    status, body = post_execute(daemon, {"command": 'echo "$A"; pwd', "env": {"A": "1"}, "cwd": str(tmp_path)})
    assert (status, body) == (200, {"stdout": "1\n%s\n" % tmp_path, "stderr": "", "exit_code": 0})
    assert post_execute(daemon, {"command": "kill -9 $$"})[1]["exit_code"] == 137


def test_legacy_execute_errors_have_the_dialects_shape(daemon, tmp_path):
    t0 = time.monotonic()
    status, body = post_execute(daemon, {"command": "sleep 30", "timeout": 1})
    assert time.monotonic() - t0 < 15
    assert status == 422
    assert body["detail"]["error"] == "CommandError"
    assert "timed out" in body["detail"]["message"]

    status, body = post_execute(daemon, {"command": "true", "cwd": str(tmp_path / "missing")})
    assert (status, body["detail"]["error"]) == (400, "CommandError")
    status, body = post_execute(daemon, {"no_command": True})
    assert (status, body["detail"]["error"]) == (400, "CommandError")
    assert post_execute(daemon, {"command": "true"}, key="wrong")[0] == 401
