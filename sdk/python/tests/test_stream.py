"""Streaming (LangSmith's and E2B's idiom), detached commands, attaching,
logs and the listing, with the sync client and the async one."""

import hashlib

import pytest

import tether


def test_run_calls_back_with_each_chunk_in_order_and_returns_the_result(client):
    out, err = [], []
    r = client.run(
        "for i in 1 2 3; do echo o$i; echo e$i >&2; done", on_stdout=out.append, on_stderr=err.append
    )
    assert b"".join(out) == b"o1\no2\no3\n" and b"".join(err) == b"e1\ne2\ne3\n"
    assert r.stdout == b"o1\no2\no3\n" and r.exit_code == 0


def test_a_handle_yields_events_in_arrival_order_with_offsets(client):
    h = client.run("printf abc; printf def >&2; sleep 0.1; printf ghi", wait=False)
    events = list(h)
    stdout = [e for e in events if isinstance(e, tether.OutputEvent) and e.stream == "stdout"]
    assert b"".join(e.data for e in stdout) == b"abcghi"
    offsets = [e.offset for e in stdout]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert all(e.offset + len(e.data) == n.offset for e, n in zip(stdout, stdout[1:]))
    r = h.wait()
    assert r.stdout == b"abcghi" and r.stderr == b"def" and h.done
    assert (h.stdout_offset, h.stderr_offset) == (6, 3)
    assert h.exit_status.stdout_bytes == 6
    assert h.result.exit_code == 0


def test_stdin_flows_while_output_streams_and_closes_with_eof(client):
    h = client.run(["sha256sum"], wait=False)
    data = bytes(range(256)) * 40000  # 10 MB, many stdin windows
    for i in range(0, len(data), 1 << 20):
        h.write_stdin(data[i : i + (1 << 20)])
    h.close_stdin()
    r = h.wait(timeout=60)
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    with pytest.raises(tether.StdinClosed):
        h.write_stdin(b"more")


def test_signal_kill_and_terminate(client):
    h = client.run("trap 'echo got INT; exit 5' INT; echo ready; while :; do sleep 0.05; done", wait=False)
    first = next(iter(h))
    assert first.data == b"ready\n"
    h.signal("INT")
    r = h.wait(timeout=10)
    assert r.exit_code == 5 and r.stdout == b"ready\ngot INT\n"
    h = client.run(["sleep", "30"], wait=False)
    h.kill()
    r = h.wait(timeout=10)
    assert (r.reason, r.signal, r.exit_code) == ("killed", 9, 137)
    h = client.run(["sleep", "30"], wait=False)
    h.terminate()
    assert h.wait(timeout=10).signal == 15
    with pytest.raises(tether.NotRunning):
        h.signal("TERM")


def test_wait_with_a_timeout_raises_and_the_command_runs_on(client):
    h = client.run(["sleep", "30"], wait=False)
    with pytest.raises(tether.CommandTimeout):
        h.wait(timeout=0.2)
    assert client.status(h.command_id).state == "running"
    h.kill()
    assert h.wait(timeout=10).reason == "killed"


def test_exec_detached_is_collected_later_even_by_another_client(client, daemon):
    h = client.exec_detached("echo early; sleep 0.3; echo late; exit 2")
    cid = h.command_id
    assert client.status(cid).state == "running"
    with tether.Client(daemon.url, token=daemon.token) as other:
        r = other.attach(cid).wait(timeout=10)
    assert (r.stdout, r.exit_code) == (b"early\nlate\n", 2)
    r = h.wait(timeout=10)
    assert (r.stdout, r.exit_code) == (b"early\nlate\n", 2)


def test_attach_from_offsets_and_with_a_tail(client):
    h = client.run("printf 0123456789; sleep 30", wait=False)
    cid = h.command_id
    assert next(iter(h)).data == b"0123456789"
    with tether.Client(
        client.url, token=client._a._token if hasattr(client, "_a") else client._target._token
    ) as c2:
        a = c2.attach(cid, stdout_offset=4)
        assert next(iter(a)) == tether.OutputEvent("stdout", 4, b"456789")
        t = c2.attach(cid, tail=3)
        assert next(iter(t)) == tether.OutputEvent("stdout", 7, b"789")
    h.kill()
    h.wait(timeout=10)


def test_a_late_attach_reports_the_bytes_the_ring_lost_as_a_gap(client):
    h = client.exec_detached("head -c 3000000 /dev/zero", ring_bytes=1 << 20)
    while client.status(h.command_id).state != "exited":
        client.exec(["sleep", "0.02"])
    r = h.wait(timeout=30)
    # The ring holds at most the last MiB; the rest was written before anyone read.
    assert r.lost_bytes + len(r.stdout) == 3000000 and r.truncated
    assert 0 < len(r.stdout) <= 1 << 20 and r.lost_bytes >= 3000000 - (1 << 20)
    events = list(client.attach(h.command_id))
    assert events[0] == tether.GapEvent("stdout", 0, r.lost_bytes)


def test_logs_as_chunks_and_lines_and_following(client):
    h = client.run("echo one; echo two >&2; echo three", wait=False)
    h.wait()
    assert b"".join(client.logs(h.command_id)) in (b"one\ntwo\nthree\n", b"one\nthree\ntwo\n")
    assert list(client.logs(h.command_id, stream="stdout", lines=True)) == ["one\n", "three\n"]
    f = client.run("for i in 1 2 3; do echo line $i; sleep 0.05; done", wait=False)
    assert list(client.logs(f.command_id, follow=True, lines=True)) == ["line 1\n", "line 2\n", "line 3\n"]
    # The handle of this client still gets everything: logs used its own connection.
    assert f.wait().stdout == b"line 1\nline 2\nline 3\n"


def test_list_status_and_remove(client):
    h = client.run(["sleep", "30"], wait=False, labels={"job": "t-list"}, name="sleeper")
    listed = client.list(labels={"job": "t-list"})
    assert [c.command for c in listed] == [h.command_id]
    info = client.status(h.command_id)
    assert (info.state, info.name, info.argv, info.pid) == ("running", "sleeper", ["sleep", "30"], h.pid)
    client.remove(h.command_id)
    assert h.wait(timeout=10).reason == "killed"
    with pytest.raises(tether.CommandNotFound):
        client.status(h.command_id)
    with pytest.raises(tether.CommandNotFound):
        client.kill("c-0000000000000000")


def test_write_stdin_by_command_id(client):
    h = client.run(["cat"], wait=False)
    client.write_stdin(h.command_id, "by id\n", close=True)
    assert h.wait(timeout=10).stdout == b"by id\n"


def test_lifetimes_idle_timeout_kill_on_disconnect_and_ttl(client, daemon):
    with tether.Client(daemon.url, token=daemon.token) as c2:
        idle = c2.run(["sleep", "30"], wait=False, idle_timeout=0.3)
        gone = c2.run(["sleep", "30"], wait=False, kill_on_disconnect=True)
        ids = idle.command_id, gone.command_id
    # c2 is closed: nobody is attached to either.
    infos = {}
    for cid in ids:
        for _ in range(200):
            info = client.status(cid)
            if info.state == "exited":
                break
            client.exec(["sleep", "0.05"])
        infos[cid] = info.exit.reason
    assert infos == {ids[0]: "idle_timeout", ids[1]: "disconnected"}
    short = client.run(["true"], wait=False, ttl=0.2)
    short.wait()
    for _ in range(200):
        try:
            client.status(short.command_id)
        except tether.CommandNotFound:
            break
        client.exec(["sleep", "0.05"])
    else:
        pytest.fail("a finished command outlived its ttl")


def test_callbacks_run_as_a_handle_is_consumed_and_wait_times_out_with_them(client):
    got = []
    h = client.run("echo first; sleep 30", wait=False, on_stdout=got.append)
    with pytest.raises(tether.CommandTimeout):
        h.wait(timeout=0.5)
    assert b"".join(got) == b"first\n"
    h.kill()
    r = h.wait(timeout=10)
    assert r.reason == "killed" and r.stdout == b"first\n" and b"".join(got) == b"first\n"
