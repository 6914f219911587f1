"""Buffered exec (the idiom of Runta, Daytona and ConTree), against a real
daemon, with the sync client and the async one."""

import io

import pytest

import tether


def test_a_string_runs_through_the_shell_and_a_list_as_argv(client):
    r = client.exec("echo $((6 * 7)) | tr 4 X")
    assert (r.exit_code, r.stdout, r.stderr, r.reason) == (0, b"X2\n", b"", "exited")
    # No shell: the `$` reaches the program as it is.
    r = client.exec(["echo", "$HOME", "a b"])
    assert r.stdout == b"$HOME a b\n"
    assert r.pid and r.command_id.startswith("c-")
    assert r.ok and r.stdout_text == "$HOME a b\n"


def test_non_zero_exits_are_returned_and_raised_only_with_check(client):
    r = client.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.ok, r.stdout, r.stderr) == (3, False, b"out\n", b"err\n")
    assert sorted([r.output[:4], r.output[4:]]) == [b"err\n", b"out\n"]
    with pytest.raises(tether.CommandFailed) as e:
        client.exec("echo nope >&2; exit 4", check=True)
    assert e.value.result.exit_code == 4
    assert "nope" in str(e.value)


def test_cwd_env_and_a_chosen_shell(client, tmp_path):
    r = client.exec("pwd; echo $GREETING", cwd=str(tmp_path), env={"GREETING": "hi there"})
    assert r.stdout == f"{tmp_path}\nhi there\n".encode()
    r = client.exec("echo $0", shell="/bin/sh")
    assert r.stdout == b"/bin/sh\n"


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda: b"line 1\nline 2\n\xff\x00", b"line 1\nline 2\n\xff\x00"),
        (lambda: "line 1\nl\u00efne 2\n", "line 1\nl\u00efne 2\n".encode()),
        (lambda: io.BytesIO(b"from a file\n"), b"from a file\n"),
        (lambda: iter([b"chunk 1,", b"chunk 2"]), b"chunk 1,chunk 2"),
    ],
    ids=["bytes", "str", "file", "iterable"],
)
def test_stdin_takes_bytes_text_a_file_or_chunks(client, make, expect):
    r = client.exec(["cat"], stdin=make())
    assert r.stdout == expect and r.exit_code == 0


def test_a_large_stdin_streams_and_without_stdin_it_is_empty(client):
    big = bytes(range(256)) * (3 << 12)  # 3 MiB, past the inline limit
    r = client.exec(["sha256sum"], stdin=big)
    import hashlib

    assert r.stdout.split()[0].decode() == hashlib.sha256(big).hexdigest()
    assert client.exec(["wc", "-c"]).stdout.strip() == b"0"


def test_a_timeout_ends_the_command_and_check_raises_command_timeout(client):
    r = client.exec("echo started; sleep 30", timeout=0.5)
    assert r.timed_out and r.reason == "timed_out" and r.signal == 15
    assert r.stdout == b"started\n"
    assert r.duration < 10
    with pytest.raises(tether.CommandTimeout) as e:
        client.exec(["sleep", "30"], timeout=0.3, check=True)
    assert isinstance(e.value, TimeoutError) and e.value.result.timed_out


def test_max_output_bytes_keeps_that_much_and_the_command_runs_on(client):
    r = client.exec("head -c 100000 /dev/zero; echo done >&2", max_output_bytes=1000)
    assert r.truncated and r.exit_code == 0
    assert len(r.stdout) + len(r.stderr) <= 1000


def test_a_big_output_arrives_whole(client):
    r = client.exec("head -c 20000000 /dev/urandom | base64 -w 0 | head -c 25000000")
    assert len(r.stdout) == 25000000 and not r.truncated and r.lost_bytes == 0


def test_a_missing_program_is_a_spawn_error_with_the_os_reason(client):
    with pytest.raises(tether.SpawnError) as e:
        client.exec(["/no/such/program"])
    assert e.value.errno == 2 and e.value.reason == "No such file or directory"
    assert e.value.code == "spawn_failed"
    with pytest.raises(tether.SpawnError):
        client.exec(["true"], cwd="/no/such/dir")


def test_bad_input_is_a_typed_error_before_or_from_the_daemon(client):
    with pytest.raises(ValueError, match="empty argv"):
        client.exec([])
    with pytest.raises(tether.BadRequest):
        client.exec(["echo", "a\x00b"])


def test_exec_leaves_nothing_behind_in_the_listing(client):
    r = client.exec(["true"])
    with pytest.raises(tether.CommandNotFound):
        for _ in range(100):  # removed right after the result, asynchronously
            client.status(r.command_id)


def test_code_run_runs_python_by_default_with_argv_and_env(client):
    r = client.code_run(
        "import os, sys; print(sys.argv[1:], os.environ['X'])", argv=["a", "b c"], env={"X": "y"}
    )
    assert r.stdout == b"['a', 'b c'] y\n" and r.exit_code == 0
    r = client.code_run("echo $1; exit 7", language="bash", argv=["z"])
    assert (r.stdout, r.exit_code) == (b"z\n", 7)
    with pytest.raises(tether.BadRequest):
        client.code_run("x", language="cobol")


def test_a_wrong_token_is_an_auth_error(daemon):
    with tether.Client(daemon.url, token="wrong-token") as c, pytest.raises(tether.AuthError):
        c.exec(["true"])


def test_url_and_token_come_from_the_environment(daemon, monkeypatch):
    monkeypatch.setenv("TETHER_URL", daemon.url)
    monkeypatch.setenv("TETHER_TOKEN", daemon.token)
    with tether.Client() as c:
        assert c.exec(["echo", "env"]).stdout == b"env\n"
    monkeypatch.delenv("TETHER_TOKEN")
    monkeypatch.setenv("TETHER_TOKEN_FILE", "/no/such/file")
    with pytest.raises(tether.AuthError, match="token file"):
        tether.Client()
