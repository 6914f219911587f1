"""Named shells (Runloop's and Daytona's sessions) and terminals (E2B's
PTY), with the sync client and the async one."""

import secrets
import time

import pytest

import tether


def test_a_named_shell_keeps_cwd_env_and_functions_across_queued_commands(client, tmp_path):
    name = "t-" + secrets.token_hex(4)
    sh = client.shell(name, cwd=str(tmp_path))
    assert sh.created and sh.name == name
    # Queued at once, run in order (Runloop's exec_async).
    handles = [
        sh.exec("mkdir -p sub && cd sub", wait=False),
        sh.exec("export STAGE=two; greet() { echo hello $1; }", wait=False),
        sh.exec("pwd; echo $STAGE; greet world", wait=False),
    ]
    results = [h.wait(timeout=20) for h in handles]
    assert [r.exit_code for r in results] == [0, 0, 0]
    assert results[2].stdout == f"{tmp_path}/sub\ntwo\nhello world\n".encode()
    again = client.shell(name)
    assert not again.created
    assert again.exec("echo $STAGE").stdout == b"two\n"
    hist = sh.history()
    assert [e.script for e in hist][:3] == [
        "mkdir -p sub && cd sub",
        "export STAGE=two; greet() { echo hello $1; }",
        "pwd; echo $STAGE; greet world",
    ]
    assert hist[2].cwd == f"{tmp_path}/sub" and hist[2].exit_code == 0
    assert name in [s.name for s in client.shells()]
    sh.close()
    assert name not in [s.name for s in client.shells()]
    with pytest.raises(tether.ShellNotFound):
        sh.exec("true")


def test_a_session_commands_logs_by_id_and_its_input(client):
    """Daytona's session idiom: run_async, the command id, logs fetched later
    by id, input sent to the running command."""
    with client.shell() as sh:
        h = sh.exec("read name; echo hi $name; echo bye >&2; (exit 4)", wait=False)
        cid = h.command_id
        client.write_stdin(cid, "ada\n")
        assert h.wait(timeout=20).exit_code == 4
        assert b"".join(client.logs(cid, stream="stdout")) == b"hi ada\n"
        assert list(client.logs(cid, stream="stderr", lines=True)) == ["bye\n"]
        assert client.status(cid).exit.code == 4
        assert sh.exec("echo still here", check=True).stdout == b"still here\n"


def test_a_shell_command_timeout_interrupts_it_and_the_shell_lives(client):
    with client.shell() as sh:
        r = sh.exec("sleep 30", timeout=0.3)
        assert r.timed_out
        assert sh.exec("echo alive").stdout == b"alive\n"
        with pytest.raises(tether.CommandFailed):
            sh.exec("false", check=True)


def test_a_shell_that_exits_is_closed_with_its_reason(client):
    sh = client.shell()
    sh.exec("exit 3")
    with pytest.raises(tether.ShellClosed):
        for _ in range(100):
            sh.exec("true")
    assert sh.status().state == "closed"
    sh.close()


def test_a_terminal_echoes_resizes_and_restores_its_screen(client):
    got = []
    t = client.pty("bash", size=(10, 40), on_data=got.append, env={"PS1": "$ "})
    t.write("stty size; echo mark-$((1+1))\n")
    seen = b""
    for ev in t:
        if isinstance(ev, tether.OutputEvent):
            seen += ev.data
        if b"mark-2" in seen and b"10 40" in seen:
            break
    assert b"10 40" in seen and b"".join(got) == seen
    t.resize(20, 60)
    assert t.screen_size() == (20, 60)
    screen = t.screen()
    assert b"mark-2" in screen
    t.write("exit 7\n")
    r = t.wait(timeout=20)
    assert r.exit_code == 7


def read_until(t, marker, timeout=20):
    """A terminal's output until `marker` shows (bounded)."""
    seen, deadline = b"", time.monotonic() + timeout
    for ev in t:
        seen += getattr(ev, "data", b"")
        if marker in seen:
            return seen
        assert time.monotonic() < deadline, seen
    raise AssertionError(f"the terminal ended before {marker!r}: {seen!r}")


def test_ctrl_c_at_a_terminal_interrupts_the_foreground_job(client):
    t = client.pty(["bash", "--norc", "-i"], env={"PS1": "prompt$ "})
    read_until(t, b"prompt$ ")
    t.write("sleep 30; echo after-$((40+2))\n")
    read_until(t, b"after-$((40+2))\r\n")
    t.write("\x03")
    read_until(t, b"prompt$ ")
    t.write("echo back-$((1+1))\n")
    seen = read_until(t, b"back-2\r\n")
    assert b"after-42" not in seen
    t.kill()
    assert t.wait(timeout=20).reason == "killed"
