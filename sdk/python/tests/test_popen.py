"""The subprocess-like API (the idiom of Python's subprocess and of ConTree's
SDK): pipes, communicate, returncodes, timeouts, output into file objects
and files uploaded before the start, against a real daemon, with the sync
client and the async one."""

import asyncio
import hashlib
import io
import os
import secrets
import signal
import subprocess

import pytest

import tether
from tether import _popen

pytestmark = pytest.mark.timeout(60)

PIPE, STDOUT, DEVNULL = tether._popen.PIPE, tether._popen.STDOUT, tether._popen.DEVNULL


def test_the_constants_are_subprocess_s():
    assert (PIPE, STDOUT, DEVNULL) == (subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL)


def test_communicate_writes_input_and_reads_both_pipes(client):
    p = client.popen(["sh", "-c", "tr a-z A-Z; echo done >&2"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
    assert p.returncode is None and p.pid and p.command_id.startswith("c-")
    out, err = p.communicate(b"hello\nworld\n", timeout=30)
    assert (out, err, p.returncode, p.poll()) == (b"HELLO\nWORLD\n", b"done\n", 0, 0)
    assert p.args == ["sh", "-c", "tr a-z A-Z; echo done >&2"]


def test_text_mode_encodes_input_and_decodes_output(client):
    p = client.popen(["sort"], stdin=PIPE, stdout=PIPE, text=True)
    out, err = p.communicate("pear\n\u00e9t\u00e9\napple\n", timeout=30)
    assert (out, err, p.returncode) == ("apple\npear\n\u00e9t\u00e9\n", None, 0)
    # Line endings are translated, as subprocess's text mode does.
    p = client.popen(["printf", "a\\r\\nb\\rc\\n"], stdout=PIPE, text=True)
    assert p.communicate(timeout=30) == ("a\nb\nc\n", None)
    # An encoding (or errors) alone makes the pipes text too.
    p = client.popen(["printf", "\\xe9\\n"], stdout=PIPE, encoding="latin-1")
    assert p.communicate(timeout=30)[0] == "\u00e9\n"


def test_stderr_to_stdout_merges_the_streams_in_arrival_order(client):
    script = "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three"
    p = client.popen(script, shell=True, stdout=PIPE, stderr=STDOUT)
    assert p.stderr is None
    assert p.communicate(timeout=30) == (b"one\ntwo\nthree\n", None)


def test_returncode_is_the_exit_code_or_minus_the_signal(client):
    p = client.popen("echo bye; exit 3", shell=True, stdout=PIPE)
    assert p.wait(timeout=30) == 3
    assert (p.returncode, p.stdout.read()) == (3, b"bye\n")
    assert p.result.reason == "exited"

    p = client.popen(["sleep", "30"])
    p.kill()
    assert p.wait(timeout=30) == -9
    assert p.result.reason == "killed"
    p.kill()  # once it has ended: nothing happens, as with subprocess

    p = client.popen(["sleep", "30"])
    p.terminate()
    assert p.wait(timeout=30) == -15

    p = client.popen(["sleep", "30"])
    p.send_signal(signal.SIGINT)  # a signal.Signals, on every Python version
    assert p.wait(timeout=30) == -2


def test_wait_with_a_timeout_raises_and_the_command_runs_on(client):
    p = client.popen(["sleep", "30"])
    with pytest.raises(tether.CommandTimeout) as e:
        p.wait(timeout=0.3)
    assert isinstance(e.value, TimeoutError)
    assert p.poll() is None and p.returncode is None
    assert client.status(p.command_id).state == "running"
    p.kill()
    assert p.wait(timeout=30) == -9


def test_poll_is_none_while_running(client):
    p = client.popen(["cat"], stdin=PIPE, stdout=PIPE)
    p.stdin.write(b"ping\n")
    assert p.stdout.readline() == b"ping\n"
    # cat waits for more input: it cannot have ended.
    assert p.poll() is None
    p.stdin.close()
    assert p.stdout.read() == b""
    assert p.wait(timeout=30) == 0 and p.poll() == 0


def test_readline_follows_a_program_that_prints_slowly(client):
    script = "for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done"
    p = client.popen(["bash", "-c", script], stdout=PIPE, text=True)
    assert p.stdout.readline() == "line 1\n"
    assert list(p.stdout) == [f"line {i}\n" for i in range(2, 6)]
    assert p.stdout.readline() == ""
    assert p.wait(timeout=30) == 0


def test_lines_are_read_one_by_one_in_a_conversation(client):
    script = 'while read -r x; do echo "got $x"; done; echo bye'
    p = client.popen(["bash", "-c", script], stdin=PIPE, stdout=PIPE, text=True)
    for word in ("a", "b", "c"):
        p.stdin.write(word + "\n")
        assert p.stdout.readline() == f"got {word}\n"
        assert p.poll() is None
    p.stdin.close()
    assert p.stdout.readlines() == ["bye\n"]
    assert p.wait(timeout=30) == 0


def test_output_goes_into_stringio_and_bytesio_as_it_arrives(client):
    out, err = io.StringIO(), io.BytesIO()
    p = client.popen(
        "printf 'd\\xc3\\xa9j\\xc3\\xa0\\n'; printf '\\xff\\x00' >&2",
        shell=True,
        stdout=out,
        stderr=err,
    )
    assert (p.stdout, p.stderr) == (None, None)
    assert p.wait(timeout=30) == 0
    assert out.getvalue() == "d\u00e9j\u00e0\n"
    assert err.getvalue() == b"\xff\x00"
    # communicate still works; it returns None for streams that are not pipes.
    out = io.StringIO()
    p = client.popen(["cat"], stdin=PIPE, stdout=out, text=True)
    assert p.communicate("via a file object\n", timeout=30) == (None, None)
    assert out.getvalue() == "via a file object\n"


def test_output_goes_into_open_files(client, tmp_path):
    with open(tmp_path / "out.bin", "wb") as fb, open(tmp_path / "err.txt", "w", encoding="utf-8") as ft:
        p = client.popen("head -c 300000 /dev/zero; echo caf\u00e9 >&2", shell=True, stdout=fb, stderr=ft)
        assert p.wait(timeout=30) == 0
        # Every byte is in the files (and flushed) once returncode is set.
        assert os.path.getsize(tmp_path / "out.bin") == 300000
        assert (tmp_path / "err.txt").read_text(encoding="utf-8") == "caf\u00e9\n"
    # A file descriptor works too.
    fd = os.open(tmp_path / "fd.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert client.popen(["echo", "by fd"], stdout=fd).wait(timeout=30) == 0
    finally:
        os.close(fd)
    assert (tmp_path / "fd.txt").read_bytes() == b"by fd\n"


def test_files_are_uploaded_before_the_command_starts(client, daemon, tmp_path):
    work = os.path.join(daemon.root, "popen-" + secrets.token_hex(4))
    (tmp_path / "local.txt").write_bytes(b"from a local file\n")
    files = {
        "sub/inline.txt": b"inline bytes\n",  # relative: taken from cwd
        "copied.txt": str(tmp_path / "local.txt"),
        os.path.join(work, "abs.txt"): io.BytesIO(b"from a file object\n"),
    }
    p = client.popen("cat sub/inline.txt copied.txt abs.txt", shell=True, cwd=work, files=files, stdout=PIPE)
    assert p.communicate(timeout=30) == (b"inline bytes\nfrom a local file\nfrom a file object\n", None)

    (tmp_path / "one.txt").write_bytes(b"one\n")
    (tmp_path / "two.txt").write_bytes(b"two\n")
    files = [str(tmp_path / "one.txt"), tmp_path / "two.txt"]
    p = client.popen(["cat", "one.txt", "two.txt"], cwd=work, files=files, stdout=PIPE)
    assert p.communicate(timeout=30) == (b"one\ntwo\n", None)


def test_20_mb_through_communicate_byte_exact(client):
    script = 'f=$(mktemp); head -c 20971520 /dev/urandom > "$f"; cat "$f"; sha256sum < "$f" >&2; rm "$f"'
    p = client.popen(["bash", "-c", script], stdout=PIPE, stderr=PIPE)
    out, err = p.communicate(timeout=50)
    assert len(out) == 20971520
    assert hashlib.sha256(out).hexdigest() == err.split()[0].decode()
    assert p.returncode == 0


def test_an_unread_pipe_holds_the_command_back_and_memory_bounded(client):
    size = 64 << 20
    p = client.popen(["head", "-c", str(size), "/dev/zero"], stdout=PIPE)
    # Nobody reads: the pipe fills, the pump stops, the daemon paces the command.
    with pytest.raises(tether.CommandTimeout):
        p.wait(timeout=1.5)
    written = client.status(p.command_id).stdout.end
    assert written < size // 4
    total = 0
    while True:
        chunk = p.stdout.read(1 << 20)
        if not chunk:
            break
        assert len(chunk) <= 1 << 20
        total += len(chunk)
    assert total == size and p.wait(timeout=30) == 0


def test_kill_then_wait_needs_no_reader_of_a_full_pipe(client):
    p = client.popen(["head", "-c", str(64 << 20), "/dev/zero"], stdout=PIPE)
    with pytest.raises(tether.CommandTimeout):
        p.wait(timeout=1)
    p.kill()
    assert p.wait(timeout=30) == -9
    assert 0 < len(p.stdout.read()) < 64 << 20


def test_a_command_that_stops_reading_is_a_broken_pipe(client):
    # communicate ignores it, as subprocess's does
    p = client.popen(["head", "-c", "1"], stdin=PIPE, stdout=PIPE)
    assert p.communicate(b"x" * (8 << 20), timeout=30) == (b"x", None)
    assert p.returncode == 0
    # a writer is told (subprocess: BrokenPipeError)
    p = client.popen(["head", "-c", "1"], stdin=PIPE, stdout=PIPE)
    with pytest.raises(tether.StdinClosed):
        for _ in range(64):
            p.stdin.write(b"y" * (1 << 20))
    assert p.wait(timeout=30) == 0 and p.stdout.read() == b"y"


def test_stdin_devnull_and_none_are_empty_and_stdout_devnull_drops(client):
    for stdin in (DEVNULL, None):
        p = client.popen(["wc", "-c"], stdin=stdin, stdout=PIPE)
        assert p.stdin is None
        assert p.communicate(timeout=30) == (b"0\n", None)
    p = client.popen(["echo", "dropped"], stdout=DEVNULL)
    assert p.communicate(timeout=30) == (None, None) and p.returncode == 0
    # stdin as the whole input, not a pipe
    p = client.popen(["cat"], stdin=b"given at the start", stdout=PIPE)
    assert p.communicate(timeout=30) == (b"given at the start", None)
    with pytest.raises(ValueError, match="stdin is not a PIPE"):
        client.popen(["true"]).communicate(b"x")
    p = client.popen(["cat"], stdin=PIPE, stdout=PIPE)
    with pytest.raises(TypeError, match="binary pipe"):
        p.communicate("text into a binary pipe")
    assert p.communicate(b"then bytes", timeout=30) == (b"then bytes", None)


def test_a_utf8_character_split_across_chunks_decodes_in_text_mode(client):
    # The euro sign's three bytes in two writes, far enough apart in time
    # to reach the client as two output events; also a \r\n split in two.
    script = "printf 'a\\xe2'; sleep 0.3; printf '\\x82\\xacb\\r'; sleep 0.3; printf '\\nc'"
    p = client.popen(["bash", "-c", script], stdout=PIPE, text=True)
    assert p.stdout.read() == "a\u20acb\nc"
    assert p.wait(timeout=30) == 0
    out = io.StringIO()
    assert client.popen(["bash", "-c", script], stdout=out).wait(timeout=30) == 0
    assert out.getvalue() == "a\u20acb\r\nc"


def test_the_pipe_decodes_across_chunk_boundaries():
    async def feed(chunks, **kw):
        r = _popen._reader("", kw.get("encoding", "utf-8"), kw.get("errors", "strict"))
        for c in chunks:
            await r._feed(c)
        await r._end()
        return await r.read()

    euro = "\u20ac".encode()
    assert asyncio.run(feed([b"a" + euro[:1], euro[1:2], euro[2:] + b"\r", b"\nb\r"])) == "a\u20ac\nb\n"
    assert asyncio.run(feed([b"x\r", b"\r\n"])) == "x\n\n"
    # A sequence cut off by the end: an error, after the text before it.
    with pytest.raises(UnicodeDecodeError):
        asyncio.run(feed([b"ok" + euro[:2]]))
    assert asyncio.run(feed([b"ok" + euro[:2]], errors="replace")) == "ok\ufffd"
    assert asyncio.run(feed(["\u00e9t\u00e9".encode("utf-16-le")], encoding="utf-16-le")) == "\u00e9t\u00e9"


def test_invalid_utf8_raises_in_strict_text_mode_and_is_replaced_on_request(client):
    p = client.popen(["printf", "ok\\n\\xff\\n"], stdout=PIPE, text=True)
    assert p.stdout.readline() == "ok\n"
    with pytest.raises(UnicodeDecodeError):
        p.stdout.read()
    assert p.wait(timeout=30) == 0
    p = client.popen(["printf", "ok\\n\\xff\\n"], stdout=PIPE, text=True, errors="replace")
    assert p.communicate(timeout=30)[0] == "ok\n\ufffd\n"


def test_communicate_after_a_timeout_continues_without_losing_output(client):
    p = client.popen("echo started; exec sleep 30", shell=True, stdout=PIPE, stderr=PIPE)
    with pytest.raises(tether.CommandTimeout):
        p.communicate(timeout=0.5)
    p.kill()  # subprocess's idiom
    assert p.communicate(timeout=30) == (b"started\n", b"")
    assert p.returncode == -9


def test_the_context_manager_closes_the_pipes_and_waits(client):
    with client.popen(["cat"], stdin=PIPE, stdout=PIPE) as p:
        p.stdin.write(b"abc")
        p.stdin.close()
        assert p.stdout.read() == b"abc"
    assert p.returncode == 0
    # Output nobody read does not keep the exit waiting: closing a pipe
    # drops the rest, the command is still drained.
    with client.popen(["head", "-c", str(8 << 20), "/dev/zero"], stdout=PIPE) as p:
        assert len(p.stdout.read(10)) == 10
    assert p.returncode == 0


def test_args_like_subprocess(client):
    # A string without shell=True is one program's name, as in subprocess.
    with pytest.raises(tether.SpawnError):
        client.popen("echo not a program")
    p = client.popen("echo $((6 * 7))", shell=True, stdout=PIPE)
    assert p.communicate(timeout=30)[0] == b"42\n"
    # shell=True with a list: the command line, then the shell's $0, $1.
    p = client.popen(['echo "$0-$1"', "zero", "one"], shell=True, stdout=PIPE)
    assert p.communicate(timeout=30)[0] == b"zero-one\n"
    p = client.popen(["sh", "-c", "pwd; echo $GREETING"], cwd="/", env={"GREETING": "hi"}, stdout=PIPE)
    assert p.communicate(timeout=30)[0] == b"/\nhi\n"


def test_stdout_none_is_this_process_s_own_as_a_child_inherits_it(client, capsys):
    print("before", flush=True)
    p = client.popen("echo to-out; echo to-err >&2", shell=True)
    assert (p.stdin, p.stdout, p.stderr) == (None, None, None)
    assert p.wait(timeout=30) == 0
    print("after")
    assert capsys.readouterr() == ("before\nto-out\nafter\n", "to-err\n")


def test_a_daemon_side_timeout_ends_it_with_a_signal(client):
    p = client.popen(["sleep", "30"], timeout=0.3)
    assert p.wait(timeout=30) in (-15, -9)
    assert p.result.reason == "timed_out"
