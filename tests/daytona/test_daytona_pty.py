"""PTY sessions (tether PTY commands) under the real `daytona` SDK, sync and
async: create with a size, envs and cwd, reconnect, list, info, resize seen
by `stty size`, kill, exit codes, a duplicate id, the native listing."""
import json
import os
import secrets

import pytest
from daytona import DaytonaBadRequestError, DaytonaConflictError, DaytonaError, DaytonaNotFoundError, PtySize

from conftest import tether_cli

#: `stty size` tagged, so the echo of the typed line cannot match.
STTY = "stty size | sed 's/^/SIZE=/'\n"
SIZE = r"SIZE=(\d+) (\d+)"


@pytest.fixture
def pty_id(box):
    name = "p-%s-%s" % (box.kind, secrets.token_hex(4))
    yield name
    try:
        box(box.sb.process.kill_pty_session(name))
    except DaytonaError:
        pass


def size_after(term, start):
    m = term.expect(SIZE, start=start)
    return int(m.group(1)), int(m.group(2))


def test_a_pty_runs_with_its_size_envs_and_cwd_and_exits_with_its_code(box, pty_id, daemon):
    os.makedirs(os.path.join(daemon.root, "ptydir"), exist_ok=True)
    t = box.pty(pty_id, cwd=os.path.join(daemon.root, "ptydir"), envs={"GREETING": "hé there"},
                pty_size=PtySize(rows=30, cols=100))
    t.send('tty | sed "s/^/TTY=/"; echo "ENV=$GREETING"; echo "CWD=$(pwd)"\n')
    assert t.expect(r"TTY=(/dev/pts/\d+)")
    assert t.expect(r"ENV=hé there")
    assert t.expect(r"CWD=(/\S*)").group(1) == os.path.join(daemon.root, "ptydir")
    start = len(t.buf)
    t.send(STTY)
    assert size_after(t, start) == (30, 100)
    t.send("exit 7\n")
    r = t.wait()
    assert (r.exit_code, r.error) == (7, None)
    info = box(box.sb.process.get_pty_session_info(pty_id))
    assert info.active is False


def test_resize_is_seen_by_stty_size(box, pty_id):
    t = box.pty(pty_id)
    start = len(t.buf)
    t.send(STTY)
    assert size_after(t, start) == (24, 80)  # the SDK's default
    info = box(box.sb.process.resize_pty_session(pty_id, PtySize(rows=40, cols=120)))
    assert (info.rows, info.cols) == (40, 120)
    start = len(t.buf)
    t.send(STTY)
    assert size_after(t, start) == (40, 120)
    info = t.resize(PtySize(rows=25, cols=90))
    assert (info.rows, info.cols) == (25, 90)
    start = len(t.buf)
    t.send(STTY)
    assert size_after(t, start) == (25, 90)
    info = box(box.sb.process.get_pty_session_info(pty_id))
    assert (info.rows, info.cols, info.active) == (25, 90, True)
    t.kill()


def test_list_and_info_describe_the_session(box, pty_id, daemon):
    t = box.pty(pty_id, cwd=daemon.root, envs={"A": "1"}, pty_size=PtySize(rows=20, cols=70))
    [info] = [i for i in box(box.sb.process.list_pty_sessions()) if i.id == pty_id]
    assert (info.active, info.rows, info.cols, info.cwd, info.envs, info.lazy_start) == \
        (True, 20, 70, daemon.root, {"A": "1"}, False)
    assert info.created_at
    assert box(box.sb.process.get_pty_session_info(pty_id)) == info
    t.kill()


def test_a_pty_is_reconnected_with_its_screen(box, pty_id):
    t = box.pty(pty_id)
    t.send('echo "MARK=$((6 * 7))"\n')
    t.expect(r"MARK=42")
    t.disconnect()
    again = box.connect_pty(pty_id)
    # The screen comes first (tether attaches with `screen: true`).
    again.expect(r"MARK=42")
    start = len(again.buf)
    again.send('echo "AGAIN=$((6 * 8))"\n')
    again.expect(r"AGAIN=48", start=start)
    again.send("exit 3\n")
    assert again.wait().exit_code == 3


def test_a_big_coloured_screen_is_restored_in_messages_the_sdk_takes(box, pty_id):
    # 59 rows of 250 cells, each in another colour than its neighbour: a
    # screen of about 90 KB, more than the 65,536 bytes a message may have
    # for the sync SDK's WebSocket (httpx-ws closes with 1009 past that).
    t = box.pty(pty_id, pty_size=PtySize(rows=60, cols=250))
    t.send("for ((i=0;i<14750;i++)); do printf '\\e[3%dm%d' $((i%8)) $((i%10)); done; "
           "printf '\\e[0mMARK=%d' $((6 * 7))\n")
    t.expect(r"MARK=42", within=30)
    t.disconnect()
    again = box.connect_pty(pty_id)
    again.expect(r"MARK=42")
    assert len(again.buf) > 65536, "the screen is only %d bytes" % len(again.buf)
    again.send("exit 3\n")
    r = again.wait()
    assert (r.exit_code, r.error) == (3, None)


def test_kill_ends_the_pty(box, pty_id):
    t = box.pty(pty_id)
    t.send("echo ready\n")
    t.expect(r"ready\r?\n")
    box(box.sb.process.kill_pty_session(pty_id))
    r = t.wait()
    assert r.exit_code not in (None, 0), r
    info = box(box.sb.process.get_pty_session_info(pty_id))
    assert info.active is False


def test_handle_kill_ends_the_pty(box, pty_id):
    t = box.pty(pty_id)
    t.kill()
    r = t.wait()
    assert r.exit_code not in (None, 0), r


def test_pty_errors_are_typed(box, pty_id):
    p = box.sb.process
    t = box.pty(pty_id)
    with pytest.raises(DaytonaConflictError):
        box.pty(pty_id)
    with pytest.raises(DaytonaBadRequestError):
        box(p.resize_pty_session(pty_id, PtySize(rows=600, cols=80)))
    t.kill()
    for call in (lambda: p.get_pty_session_info("no-such-pty"),
                 lambda: p.kill_pty_session("no-such-pty"),
                 lambda: p.resize_pty_session("no-such-pty", PtySize(rows=10, cols=10))):
        with pytest.raises(DaytonaNotFoundError):
            box(call())
    # tether's PTY sizes stop at 500 (Daytona's at 1000): 400 (T12).
    with pytest.raises(DaytonaBadRequestError):
        box.pty(pty_id + "-big", pty_size=PtySize(rows=600, cols=80))
    # connect_pty_session has no typed branch for a refused upgrade.
    with pytest.raises(DaytonaError):
        box.connect_pty("no-such-pty")


def test_a_pty_session_is_a_native_command(box, pty_id, daemon):
    t = box.pty(pty_id, pty_size=PtySize(rows=33, cols=99))
    ls = tether_cli(daemon, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    [entry] = [c for c in json.loads(ls.stdout) if (c.get("labels") or {}).get("daytona.pty") == pty_id]
    assert entry["state"] == "running"
    assert (entry["pty"]["rows"], entry["pty"]["cols"]) == (33, 99), entry
    t.kill()


def test_simultaneous_creates_of_one_id_start_one_session(daemon):
    """Eight creates of one id at once (sync SDK, a thread and a client
    each): exactly one gets a session, the others a conflict, and one PTY
    command carries the id."""
    import threading

    from daytona import Daytona

    from conftest import config

    pty = "race-" + secrets.token_hex(4)
    sandboxes = [Daytona(config(daemon.url, daemon.token)).get("local") for _ in range(8)]
    barrier, results = threading.Barrier(len(sandboxes)), []

    def create(sb):
        barrier.wait(timeout=10)
        try:
            results.append(sb.process.create_pty_session(id=pty))
        except DaytonaConflictError as e:
            results.append(e)

    threads = [threading.Thread(target=create, args=(sb,)) for sb in sandboxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    handles = [r for r in results if not isinstance(r, Exception)]
    assert len(results) == len(sandboxes) and len(handles) == 1, results
    listed = json.loads(tether_cli(daemon, "ls", "--json").stdout)
    assert sum(1 for c in listed if (c.get("labels") or {}).get("daytona.pty") == pty) == 1
    sandboxes[0].process.kill_pty_session(pty)
