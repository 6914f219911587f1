"""Sessions (tether's named shells) under the real `daytona` SDK, sync and
async: their commands, logs (JSON and the follow WebSocket), input, delete,
a 10 MB log, the native listing, and a follow cut by a proxy."""
import hashlib
import json
import secrets

import pytest
from daytona import (
    DaytonaCommandAlreadyCompletedError, DaytonaConflictError, DaytonaError, DaytonaNotFoundError,
    SessionExecuteRequest,
)

from conftest import CuttableProxy, Daemon, close_box, open_box, proc_gone, tether_cli, utf8_text, write_program


def digest(s):
    return hashlib.sha256(s.encode()).hexdigest()


def run(box, sid, command, run_async=False, within=45):
    return box(box.sb.process.execute_session_command(sid, SessionExecuteRequest(command=command, run_async=run_async)),
               within=within)


@pytest.fixture
def sid(box):
    """A new session's id (the session is made by the test), deleted after."""
    name = "s-%s-%s" % (box.kind, secrets.token_hex(4))
    yield name
    try:
        box(box.sb.process.delete_session(name))
    except DaytonaError:
        pass


def test_session_create_get_list_exec_delete(box, sid):
    p = box.sb.process
    box(p.create_session(sid))
    with pytest.raises(DaytonaConflictError):
        box(p.create_session(sid))
    s = box(p.get_session(sid))
    assert (s.session_id, s.commands) == (sid, [])
    assert sid in [x.session_id for x in box(p.list_sessions())]

    # (exit 3): a bare `exit` would end the session's shell.
    r = run(box, sid, "echo out; sleep 0.1; echo err >&2; (exit 3)")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3)
    # output holds both (its cross-stream order is not kept: protocol T7).
    assert sorted(r.output.splitlines()) == ["err", "out"]
    r2 = run(box, sid, "echo second")
    assert (r2.stdout, r2.exit_code) == ("second\n", 0) and r2.cmd_id != r.cmd_id

    s = box(p.get_session(sid))
    assert [(c.id, c.command, c.exit_code) for c in s.commands] == [
        (r.cmd_id, "echo out; sleep 0.1; echo err >&2; (exit 3)", 3), (r2.cmd_id, "echo second", 0)]
    c = box(p.get_session_command(sid, r.cmd_id))
    assert (c.id, c.exit_code) == (r.cmd_id, 3)
    logs = box(p.get_session_command_logs(sid, r.cmd_id))
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")

    box(p.delete_session(sid))
    with pytest.raises(DaytonaNotFoundError):
        box(p.get_session(sid))
    assert sid not in [x.session_id for x in box(p.list_sessions())]


def test_session_state_is_kept_across_commands(box, sid):
    box(box.sb.process.create_session(sid))
    for step in ("cd /tmp", "export X='a b'", 'greet() { echo "hi:$1:$X"; }'):
        assert run(box, sid, step).exit_code == 0
    r = run(box, sid, "pwd; greet you")
    assert (r.stdout, r.exit_code) == ("/tmp\nhi:you:a b\n", 0)


def test_an_exit_ends_the_session(box, sid):
    # A session command runs in the session's shell (upstream too): `exit`
    # ends the shell, and the session answers 410 afterwards.
    from daytona import DaytonaSessionEndedError

    box(box.sb.process.create_session(sid))
    assert run(box, sid, "exit 7").exit_code == 7
    with pytest.raises(DaytonaSessionEndedError) as e:
        run(box, sid, "echo too late")
    assert "session %r has ended" % sid in str(e.value).replace('"', "'")


def test_run_async_answers_at_once_and_the_command_is_followed_up(box, sid):
    p = box.sb.process
    box(p.create_session(sid))
    r = run(box, sid, "sleep 0.5; echo done; echo oops >&2; (exit 5)", run_async=True)
    assert r.cmd_id and r.exit_code is None
    running = box(p.get_session_command(sid, r.cmd_id))
    assert running.exit_code is None
    assert box.finished(sid, r.cmd_id).exit_code == 5
    logs = box(p.get_session_command_logs(sid, r.cmd_id))
    assert (logs.stdout, logs.stderr) == ("done\n", "oops\n")
    assert sorted(logs.output.splitlines()) == ["done", "oops"]


def test_follow_callbacks_are_complete_and_in_order(box, sid):
    box(box.sb.process.create_session(sid))
    # Each line 20 ms after the last: the order between the streams is the
    # order they were written.
    r = run(box, sid, "for i in $(seq 1 15); do echo o$i; sleep 0.02; echo é$i >&2; sleep 0.02; done; (exit 4)",
            run_async=True)
    f = box.follow(sid, r.cmd_id)
    f.result()
    want = [(s, "%s%d\n" % (p, i)) for i in range(1, 16) for s, p in (("stdout", "o"), ("stderr", "é"))]
    got = [(s, line) for s, text in f.events for line in text.splitlines(keepends=True)]
    # Chunks may hold several lines or part of one: compare the streams
    # whole, and the order of the lines.
    assert f.text("stdout") == "".join(t for s, t in want if s == "stdout")
    assert f.text("stderr") == "".join(t for s, t in want if s == "stderr")
    assert [s for s, _ in got] == [s for s, _ in want], f.events
    assert box.finished(sid, r.cmd_id).exit_code == 4
    # A follow of a finished command sends everything and ends.
    again = box.follow(sid, r.cmd_id)
    again.result()
    assert (again.text("stdout"), again.text("stderr")) == (f.text("stdout"), f.text("stderr"))


def test_input_reaches_a_running_command(box, sid):
    p = box.sb.process
    box(p.create_session(sid))
    r = run(box, sid, "read a; echo got:$a; read b; echo got:$b", run_async=True)
    box(p.send_session_command_input(sid, r.cmd_id, "one\n"))
    box.poll(lambda: "got:one" in box(p.get_session_command_logs(sid, r.cmd_id)).stdout)
    box(p.send_session_command_input(sid, r.cmd_id, "twé\n"))
    assert box.finished(sid, r.cmd_id).exit_code == 0
    assert box(p.get_session_command_logs(sid, r.cmd_id)).stdout == "got:one\ngot:twé\n"
    with pytest.raises(DaytonaCommandAlreadyCompletedError):
        box(p.send_session_command_input(sid, r.cmd_id, "late\n"))


def test_session_errors_are_typed(box, sid):
    p = box.sb.process
    for call in (lambda: p.get_session("no-such-session"),
                 lambda: p.delete_session("no-such-session"),
                 lambda: p.execute_session_command("no-such-session", SessionExecuteRequest(command="true"))):
        with pytest.raises(DaytonaNotFoundError) as e:
            box(call())
        # In the SDK's words: sessions, not tether's shells.
        assert 'no session "no-such-session"' in str(e.value)
    box(p.create_session(sid))
    for call in (lambda: p.get_session_command(sid, "c-nosuchcommand"),
                 lambda: p.get_session_command_logs(sid, "c-nosuchcommand")):
        with pytest.raises(DaytonaNotFoundError):
            box(call())


def test_a_bad_session_id_is_a_bad_request(box):
    from daytona import DaytonaBadRequestError

    for bad in ("bad/id", "a" * 65):
        with pytest.raises(DaytonaBadRequestError):
            box(box.sb.process.create_session(bad))


def test_deleting_a_session_kills_what_it_runs(box, sid):
    p = box.sb.process
    box(p.create_session(sid))
    r = run(box, sid, "sleep 300 & echo $!; sleep 301", run_async=True)
    out = box.poll(lambda: box(p.get_session_command_logs(sid, r.cmd_id)).stdout)
    pid = int(out.split()[0])
    assert not proc_gone(pid)
    box(p.delete_session(sid))
    box.poll(lambda: proc_gone(pid), within=10)
    with pytest.raises(DaytonaNotFoundError):
        box(p.get_session(sid))


def test_a_session_command_is_a_native_command(box, sid, daemon):
    p = box.sb.process
    box(p.create_session(sid))
    r = run(box, sid, "echo up; sleep 30", run_async=True)
    ls = tether_cli(daemon, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    [entry] = [c for c in json.loads(ls.stdout) if c["command"] == r.cmd_id]
    assert entry.get("shell") == sid and entry["state"] == "running", entry
    box(p.delete_session(sid))


@pytest.fixture(scope="module")
def big_ring():
    """A daemon whose rings (16 MiB per stream) hold a whole 10 MB log."""
    with Daemon("--ring-bytes", str(16 << 20)) as d:
        yield d


def test_a_10_mb_log_is_byte_exact(big_ring, loop, kind):
    b = open_box(kind, big_ring.url, big_ring.token, loop)
    try:
        p, sid = b.sb.process, "big-" + kind
        program = write_program(big_ring.root)
        want = utf8_text(10 << 20)
        b(p.create_session(sid))
        r = run(b, sid, "python3 %s %d" % (program, 10 << 20), within=60)
        assert r.exit_code == 0
        assert (len(r.stdout), digest(r.stdout)) == (len(want), digest(want))
        logs = b(p.get_session_command_logs(sid, r.cmd_id), within=60)
        assert (len(logs.stdout), digest(logs.stdout), logs.stderr) == (len(want), digest(want), "")
        f = b.follow(sid, r.cmd_id)
        f.result(within=60)
        got = f.text("stdout")
        assert (len(got), digest(got)) == (len(want), digest(want))
        b(p.delete_session(sid))
    finally:
        close_box(b)


def test_a_follow_cut_by_the_network_is_reopened_whole(daemon, loop, kind):
    # The toolbox URL is built from the request's Host, so a sandbox got
    # through the proxy sends its toolbox traffic (and the follow) through it.
    proxy = CuttableProxy(daemon.url)
    b = open_box(kind, proxy.url, daemon.token, loop)
    try:
        assert b.sb.toolbox_proxy_url.startswith(proxy.url)
        p, sid = b.sb.process, "cut-" + kind
        b(p.create_session(sid))
        r = run(b, sid, "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done", run_async=True)
        f = b.follow(sid, r.cmd_id)
        b.poll(lambda: "line-3\n" in f.text("stdout"))
        proxy.cut_all()
        # A cut follow raises, or ends early; it never hangs.
        try:
            f.result(within=15)
        except DaytonaError:
            pass
        cut = f.text("stdout")
        want = "".join("line-%d\n" % i for i in range(1, 41))
        assert want.startswith(cut) and cut != want
        # Re-calling it gets the whole log from the start.
        assert b.finished(sid, r.cmd_id).exit_code == 0
        again = b.follow(sid, r.cmd_id)
        again.result()
        assert again.text("stdout") == want
        b(p.delete_session(sid))
    finally:
        close_box(b)
        proxy.close()
