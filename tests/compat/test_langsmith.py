"""The real `langsmith` sandbox client (pinned) against a tether daemon
serving its dialect at /compat/langsmith (protocol/compat/langsmith.md)."""
import hashlib
import time

import pytest
from langsmith.sandbox import CommandTimeoutError, SandboxOperationError

from conftest import CutProxy, assert_expires, sandbox, tether_cli


def test_run_returns_output_and_exit_code(sb):
    r = sb.run("echo héllo; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code) == ("héllo\n", "err\n", 3)
    assert sb.run("true").exit_code == 0


def test_callbacks_and_a_handle_stream_every_chunk(sb):
    seen_out, seen_err = [], []
    r = sb.run("for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.05; done",
               on_stdout=seen_out.append, on_stderr=seen_err.append)
    assert "".join(seen_out) == "1\n2\n3\n" == r.stdout
    assert "".join(seen_err) == "e1\ne2\ne3\n"
    h = sb.run("printf 'a\\nb\\n'", wait=False)
    chunks = list(h)
    assert "".join(c.data for c in chunks if c.stream == "stdout") == "a\nb\n"
    assert h.result.exit_code == 0


def test_send_input_reaches_stdin(sb):
    h = sb.run("read a; echo got:$a; cat", wait=False, close_input=False)
    h.send_input("first\n")
    h.send_input("more")
    h.close_input()
    assert h.result.stdout == "got:first\nmore"


def test_timeout_raises_command_timeout(sb):
    t0 = time.monotonic()
    with pytest.raises(CommandTimeoutError):
        sb.run("sleep 30", timeout=1)
    assert time.monotonic() - t0 < 15


def test_kill_ends_the_command_and_a_reconnect_reads_137(sb):
    h = sb.run("echo started; sleep 100", wait=False)
    first = next(iter(h))
    assert first.data == "started\n"
    h.kill()
    assert sb.reconnect(h.command_id).result.exit_code == 137


def test_reconnect_from_offsets_gets_the_rest_once(sb):
    h = sb.run("for i in $(seq 1 5); do echo line-$i; sleep 0.05; done", wait=False)
    first = next(iter(h))
    r = sb.reconnect(h.command_id, stdout_offset=len(first.data.encode()))
    assert first.data + r.result.stdout == "".join("line-%d\n" % i for i in range(1, 6))


def test_output_survives_connection_cuts_byte_exact(daemon):
    # About 780 kB of text (within the daemon's 1 MiB ring: output written
    # while the client is away is kept up to the ring, and this client cannot
    # see a gap), cut every 200 kB of daemon-to-client traffic (frames are
    # at most 64 KiB of output each, so every connection gets some through).
    proxy = CutProxy(daemon["url"], 200_000)
    try:
        sb = sandbox(proxy.url, daemon["token"])
        r = sb.run("seq 1 120000", timeout=120)
        want = "".join("%d\n" % i for i in range(1, 120001))
        assert hashlib.sha256(r.stdout.encode()).hexdigest() == hashlib.sha256(want.encode()).hexdigest()
        assert r.exit_code == 0
        assert proxy.cuts >= 2, proxy.cuts
    finally:
        proxy.close()


def test_a_finished_command_expires_after_its_ttl(sb):
    h = sb.run("echo x", wait=False, ttl_seconds=1)
    assert h.result.exit_code == 0
    assert_expires(sb, h.command_id)


def test_pty_runs_on_a_terminal(sb):
    r = sb.run("tty; echo $TERM", pty=True)
    assert r.exit_code == 0
    assert r.stdout.startswith("/dev/pts/"), r.stdout


def test_files_write_read_stat_and_ranges(sb, daemon):
    from langsmith.sandbox import ResourceNotFoundError

    data = bytes(range(256)) * 40
    sb.write("deep/dir/blob.bin", data)  # parents are created
    assert open(daemon["root"] + "/deep/dir/blob.bin", "rb").read() == data
    assert sb.read("deep/dir/blob.bin") == data
    sb.write("deep/dir/blob.bin", "héllo")  # overwrite, text as UTF-8
    assert sb.read("deep/dir/blob.bin") == "héllo".encode()
    st = sb.stat("deep/dir/blob.bin")
    assert st.size_bytes == 6 and st.etag
    chunk = sb.read_range("deep/dir/blob.bin", start=1, end=3)
    assert (chunk.content, chunk.partial, chunk.start, chunk.total_bytes) == ("é".encode() + b"l", True, 1, 6)
    assert sb.read_range("deep/dir/blob.bin", suffix_bytes=2).content == b"lo"
    assert sb.read_range("deep/dir/blob.bin", start=0, if_none_match=st.etag).unchanged
    with pytest.raises(SandboxOperationError):
        sb.read_range("deep/dir/blob.bin", start=100)
    with pytest.raises(ResourceNotFoundError):
        sb.read("no/such/file")


def test_a_fast_writer_loses_nothing_while_the_client_reconnects(daemon):
    # About 6.8 MB written as fast as base64 goes, 1.6x the dialect's 4 MiB
    # ring, the connection cut every 1 MB: while the client is away (0.5 s
    # each time) its attachment lingers and holds the command back. What
    # the daemon sent but the client never got must still be in the ring:
    # half of it (2 MiB) covers a path that buffers 256 KiB each way, not
    # loopback's autotuned many MiB (the dialect has no acknowledgements).
    proxy = CutProxy(daemon["url"], 1_000_000, buffers=256 << 10)
    try:
        sb = sandbox(proxy.url, daemon["token"])
        r = sb.run("head -c 5000000 /dev/zero | tr '\\0' 'a' | base64 -w 100", timeout=120)
        import base64
        want = base64.b64encode(b"a" * 5_000_000).decode()
        want = "\n".join(want[i:i + 100] for i in range(0, len(want), 100)) + "\n"
        assert (len(r.stdout), hashlib.sha256(r.stdout.encode()).hexdigest()) == \
            (len(want), hashlib.sha256(want.encode()).hexdigest())
        assert proxy.cuts >= 3, proxy.cuts
    finally:
        proxy.close()


def test_started_echoes_the_clients_command_id_and_both_ids_work(sb, daemon, monkeypatch, caplog):
    # The client makes its command_id with langsmith.uuid.uuid7 (imported
    # at each run()); note what it made without changing it.
    import json

    import langsmith.uuid

    made, real = [], langsmith.uuid.uuid7

    def noting():
        u = real()
        made.append(u.hex)
        return u

    monkeypatch.setattr(langsmith.uuid, "uuid7", noting)
    h = sb.run("echo one; read x; echo two:$x", wait=False, close_input=False)
    mine = h.command_id
    assert mine in made and len(mine) == 32 and int(mine, 16) >= 0, (mine, made)

    # tether's own id, from the native listing, names the same command.
    ls = tether_cli(daemon, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    [entry] = [c for c in json.loads(ls.stdout) if c.get("labels", {}).get("langsmith.command_id") == mine]
    theirs = entry["command"]
    assert theirs.startswith("c-") and theirs != mine
    assert entry["pid"] == h.pid
    for some_id in (mine, theirs):
        st = tether_cli(daemon, "status", some_id)
        assert st.returncode == 0, (some_id, st.stderr)
        assert (json.loads(st.stdout)["command"], json.loads(st.stdout)["pid"]) == (theirs, h.pid), some_id

    # A reconnect with either id attaches to the running command, and its
    # `started` names the id it was asked for (no warning from the client).
    caplog.set_level("WARNING", logger="langsmith.sandbox")
    by_mine, by_theirs = sb.reconnect(mine), sb.reconnect(theirs)
    assert (by_mine.command_id, by_theirs.command_id) == (mine, theirs)
    assert next(iter(by_mine)).data == "one\n"
    assert next(iter(by_theirs)).data == "one\n"
    h.send_input("go\n")
    for handle in (h, by_mine, by_theirs):
        assert (handle.result.stdout, handle.result.exit_code) == ("one\ntwo:go\n", 0)
    assert not [r for r in caplog.records if "acknowledgement" in r.getMessage()], caplog.text
    # And after its end, while its TTL lasts.
    for some_id in (mine, theirs):
        assert sb.reconnect(some_id).result.stdout == "one\ntwo:go\n"


def test_sse_started_echoes_the_clients_command_id_too(sb, daemon, sse, monkeypatch):
    # The SSE transport's `started` event names the command the same way,
    # and its resume takes either id.
    import json

    import langsmith.uuid

    made, real = [], langsmith.uuid.uuid7

    def noting():
        u = real()
        made.append(u.hex)
        return u

    monkeypatch.setattr(langsmith.uuid, "uuid7", noting)
    h = sb.run("echo one; exit 5", wait=False)
    mine = h.command_id
    assert mine in made, (mine, made)
    assert h.result.exit_code == 5
    st = tether_cli(daemon, "status", mine)
    assert st.returncode == 0, st.stderr
    theirs = json.loads(st.stdout)["command"]
    assert theirs.startswith("c-") and theirs != mine
    for some_id in (mine, theirs):
        r = sb.reconnect(some_id).result
        assert (r.stdout, r.exit_code) == ("one\n", 5), some_id


def test_a_burst_of_input_reaches_a_slow_reader(sb):
    # 400 `send_input` calls of 1 KiB at once (400 KiB, a tenth of the
    # dialect's 4 MiB stdin window, langsmith.md 12.2), then `close_input`,
    # to a loop that reads more slowly than they come: the client gets no
    # reply and cannot resend, so the daemon must hold them all, and the
    # end of input after them, until the command takes them.
    h = sb.run('while IFS= read -r l; do echo "${l%% *}"; sleep 0.002; done', wait=False, close_input=False,
               timeout=10)
    pad = "." * 1024
    for i in range(1, 401):
        h.send_input("in-%d %s\n" % (i, pad))
    h.close_input()
    out = []
    try:
        for chunk in h:
            out.append(chunk.data)
        code = h.result.exit_code
    except CommandTimeoutError:
        code = "timed out: its stdin never ended"
    got = "".join(out).split()
    missing = sorted(set(range(1, 401)) - {int(g.removeprefix("in-")) for g in got})
    assert not missing, "%d of 400 input lines lost (%r ...); exit: %s" % (len(missing), missing[:5], code)
    assert (got, code) == (["in-%d" % i for i in range(1, 401)], 0)
