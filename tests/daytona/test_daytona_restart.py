"""A graceful restart (SIGUSR2) in the middle of a session, under the real
`daytona` SDK, sync and async. The daemon re-executes itself in the same
process and hands its commands, its idle named shells and its listening
socket over (protocol/compat/daytona.md section 13): an idle session goes
on in the same shell (cwd, variables, functions, history); a session busy
with a command at that moment ends (its shell is closed), and what the
user keeps of it is every command, reachable by id with the output it
wrote; PTY sessions are reconnectable with their shell alive."""
import pytest
from daytona import SessionExecuteRequest

from conftest import Daemon, close_box, open_box


@pytest.fixture
def d():
    # A daemon of this test's own: restarting it must not disturb others.
    with Daemon() as daemon:
        yield daemon


def restart(d):
    lines = d.wait_lines(d.restart())
    assert lines[-1] == lines[0], "the same address after the restart"
    assert d.proc.poll() is None, "the daemon process lives on"


def test_a_restart_in_the_middle_of_a_session(d, loop, kind):
    from daytona import DaytonaNotFoundError

    b = open_box(kind, d.url, d.token, loop)
    try:
        p = b.sb.process
        sid, busy, pty_id = "restart-" + kind, "busy-" + kind, "restart-pty-" + kind

        def run(session, command, run_async=False):
            return b(p.execute_session_command(session, SessionExecuteRequest(command=command, run_async=run_async)))

        b(p.create_session(sid))
        assert run(sid, "cd /tmp && export X=1 && f() { echo fn-$1; }").exit_code == 0
        done = run(sid, "echo finished-before")
        b(p.create_session(busy))
        running = run(busy, "echo before; sleep 30; echo after", run_async=True)
        b.poll(lambda: b(p.get_session_command_logs(busy, running.cmd_id)).stdout == "before\n")
        term = b.pty(pty_id)
        term.send("export Y=kept; echo ready-$((40+2))\n")
        term.expect("ready-42")
        term.disconnect()

        restart(d)

        # The idle session goes on in the same shell, history and all.
        r = run(sid, 'echo "$PWD:$X"; f ok')
        assert (r.stdout, r.exit_code) == ("/tmp:1\nfn-ok\n", 0)
        ids = [c.id for c in b(p.get_session(sid)).commands]
        assert ids[-2:] == [done.cmd_id, r.cmd_id] and len(ids) == 3
        assert b(p.get_session_command_logs(sid, done.cmd_id)).stdout == "finished-before\n"
        # The busy one ended with the restart: the SDK says so, and its
        # command is still reachable by id with what it wrote.
        with pytest.raises(DaytonaNotFoundError):
            b(p.get_session(busy))
        assert busy not in [s.session_id for s in b(p.list_sessions())]
        ended = b.finished(busy, running.cmd_id)
        assert ended.exit_code != 0, "the command ended with its shell"
        assert b(p.get_session_command_logs(busy, running.cmd_id)).stdout == "before\n"
        f = b.follow(busy, running.cmd_id)
        f.result()
        assert f.text("stdout") == "before\n"
        # The PTY session lives on, its shell with it.
        assert b(p.get_pty_session_info(pty_id)).active
        again = b.connect_pty(pty_id)
        start = len(again.buf)
        again.send("echo $Y-$((6*7))\n")
        again.expect("kept-42", start=start)
        again.kill()
        # The busy session's name is free again: a new session, fresh.
        b(p.create_session(busy))
        r = run(busy, 'echo "[$X]"')
        assert (r.stdout, r.exit_code) == ("[]\n", 0)
        b(p.delete_session(busy))
        b(p.delete_session(sid))
    finally:
        close_box(b)


def test_a_follow_open_across_a_restart_ends_and_can_be_reopened(d, loop, kind):
    from daytona import DaytonaError

    b = open_box(kind, d.url, d.token, loop)
    try:
        p, sid = b.sb.process, "refollow-" + kind
        b(p.create_session(sid))
        r = b(p.execute_session_command(sid, SessionExecuteRequest(
            command="for i in $(seq 1 1000); do echo line-$i; sleep 0.05; done", run_async=True)))
        f = b.follow(sid, r.cmd_id)
        b.poll(lambda: "line-2\n" in f.text("stdout"))
        restart(d)
        # The restart closes the follow (1001: the SDK raises).
        with pytest.raises(DaytonaError):
            f.result(within=15)
        b.finished(sid, r.cmd_id)
        # Reopened, it gets everything the command wrote, from the start,
        # and ends cleanly (1000).
        again = b.follow(sid, r.cmd_id)
        again.result()
        text = again.text("stdout")
        lines = text.splitlines()
        assert len(lines) >= 2 and lines == ["line-%d" % i for i in range(1, len(lines) + 1)], text[-200:]
        assert text == b(p.get_session_command_logs(sid, r.cmd_id)).stdout
    finally:
        close_box(b)
