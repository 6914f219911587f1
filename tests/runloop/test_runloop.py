"""The Runloop SDK (sync) against a real daemon: the devbox, executions,
their output (whole and through callbacks), stdin, kill, files and errors."""
import hashlib
import os
import time

import pytest
from conftest import Collect, sdk_for, tether_cli

from runloop_api_client import APIStatusError, AuthenticationError, BadRequestError, NotFoundError

#: 5 MB of lines, deterministic, for the byte-exact tests.
BIG = "python3 -c \"import sys; sys.stdout.write(''.join('%07d abcdefghijklmnopqrstuvwxyz0123456789\\n' % i for i in range(5000000 // 45)))\""
BIG_TEXT = "".join("%07d abcdefghijklmnopqrstuvwxyz0123456789\n" % i for i in range(5000000 // 45))


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def test_the_devbox_is_this_host_and_running(sdk, devbox):
    info = devbox.get_info()
    assert info.id == "local" and info.status == "running"
    with pytest.raises(NotFoundError) as e:
        sdk.api.devboxes.retrieve("not-this-one")
    assert "local" in str(e.value.body)


def test_a_command_gives_its_output_and_exit_code(devbox):
    r = devbox.cmd.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout(), r.stderr()) == (3, "out\n", "err\n")
    assert r.failed and not r.success
    r = devbox.cmd.exec("printf 'a\\nb\\nc\\n'")
    assert r.exit_code == 0 and r.stdout(num_lines=2) == "b\nc"


def test_a_command_runs_from_home_in_a_login_shell(devbox):
    r = devbox.cmd.exec('pwd; shopt -q login_shell && echo login')
    assert r.stdout() == "%s\nlogin\n" % os.path.realpath(os.environ["HOME"])


def test_five_megabytes_come_back_exact_whole_and_through_callbacks(devbox):
    r = devbox.cmd.exec(BIG)
    assert r.exit_code == 0
    assert r.result.stdout_truncated is False
    assert sha(r.stdout()) == sha(BIG_TEXT)
    out = Collect()
    r = devbox.cmd.exec(BIG, stdout=out)
    assert r.exit_code == 0 and sha(out.text()) == sha(BIG_TEXT)


def test_callbacks_get_every_chunk_in_order(devbox):
    out, err, both = Collect(), Collect(), Collect()
    r = devbox.cmd.exec(
        "for i in $(seq 1 300); do echo o$i; echo e$i >&2; done", stdout=out, stderr=err, output=both
    )
    assert r.exit_code == 0
    assert out.text() == "".join("o%d\n" % i for i in range(1, 301))
    assert err.text() == "".join("e%d\n" % i for i in range(1, 301))
    # `output` hears both streams (their interleaving is not kept).
    assert sorted(both.text().splitlines()) == sorted(out.text().splitlines() + err.text().splitlines())


def test_output_that_is_not_utf8_keeps_its_byte_offsets(sdk, devbox):
    # A character cut between two reads, then invalid bytes: the stream's
    # offsets still count raw bytes, so a read from an offset is exact.
    r = devbox.cmd.exec("printf 'caf\\303'; sleep 0.2; printf '\\251 \\377!'")
    assert r.stdout() == "café \ufffd!"
    chunks = list(sdk.api.devboxes.executions.stream_stdout_updates(r.execution_id, devbox_id="local"))
    assert "".join(c.output for c in chunks) == "café \ufffd!"
    assert chunks[-1].offset == 8
    tail = list(sdk.api.devboxes.executions.stream_stdout_updates(r.execution_id, devbox_id="local", offset="5"))
    assert "".join(c.output for c in tail) == " \ufffd!"


def test_a_background_execution_is_a_tether_command_and_can_be_killed(daemon, devbox):
    started = Collect()
    ex = devbox.cmd.exec_async("echo started; sleep 30", stdout=started)
    started.wait_for(lambda t: t == "started\n")
    assert ex.get_state().status == "running"
    ls = tether_cli(daemon, "ls")
    assert ex.execution_id in ls.stdout, ls.stdout + ls.stderr
    t = time.monotonic()
    ex.kill()
    r = ex.result()
    assert time.monotonic() - t < 10
    assert r.exit_code == 137 and r.stdout() == "started\n"
    assert ex.get_state().status == "completed"


def test_stdin_is_written_and_closed(devbox):
    ex = devbox.cmd.exec_async("cat; echo end", attach_stdin=True)
    ex.send_std_in("hello\n")
    ex.send_std_in("world\n")
    ex.close_std_in()
    r = ex.result()
    assert (r.exit_code, r.stdout()) == (0, "hello\nworld\nend\n")


def test_stdin_without_attach_is_closed_and_refused(devbox):
    r = devbox.cmd.exec("cat; echo done")
    assert r.stdout() == "done\n"
    ex = devbox.cmd.exec_async("sleep 5")
    with pytest.raises(BadRequestError) as e:
        ex.send_std_in("x")
    assert "attach_stdin" in str(e.value.body)
    ex.kill()


def test_a_resent_execute_runs_once_and_a_resent_stdin_writes_once(sdk, tmp_path):
    mark = tmp_path / "runs"
    api = sdk.api.devboxes
    cmd = "echo run >> %s; cat" % mark
    a = api.execute_async("local", command=cmd, attach_stdin=True, idempotency_key="same-request-1")
    b = api.execute_async("local", command=cmd, attach_stdin=True, idempotency_key="same-request-1")
    assert a.execution_id == b.execution_id
    for _ in range(2):
        api.executions.send_std_in(a.execution_id, devbox_id="local", text="once\n", idempotency_key="stdin-1")
    api.executions.send_std_in(a.execution_id, devbox_id="local", signal="EOF", idempotency_key="eof-1")
    api.executions.send_std_in(a.execution_id, devbox_id="local", signal="EOF", idempotency_key="eof-1")
    done = api.executions.await_completed(a.execution_id, devbox_id="local")
    assert done.stdout == "once\n"
    assert mark.read_text() == "run\n"
    c = api.execute_async("local", command=cmd, idempotency_key="same-request-2")
    assert c.execution_id != a.execution_id


def test_a_wait_that_runs_out_is_a_408_and_the_sdk_waits_on(sdk, devbox):
    ex = devbox.cmd.exec_async("sleep 2; echo late")
    api = sdk.api.with_options(max_retries=0)
    with pytest.raises(APIStatusError) as e:
        api.devboxes.wait_for_command(ex.execution_id, devbox_id="local", statuses=["completed"], timeout_seconds=0.3)
    assert e.value.status_code == 408
    # cmd.exec's long-poll loop takes 408 as "ask again".
    r = devbox.cmd.exec("sleep 1.5; echo waited")
    assert r.stdout() == "waited\n"
    assert ex.result().stdout() == "late\n"


def test_files_roundtrip_text_and_ten_megabytes(devbox, tmp_path):
    p = str(tmp_path / "dir" / "a.txt")
    devbox.file.write(file_path=p, contents="héllo\nworld\n")
    assert devbox.file.read(file_path=p) == "héllo\nworld\n"
    data = os.urandom(10 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    dest = str(tmp_path / "up" / "b.bin")
    with open(src, "rb") as f:
        devbox.file.upload(path=dest, file=f)
    assert hashlib.sha256(open(dest, "rb").read()).digest() == hashlib.sha256(data).digest()
    got = devbox.file.download(path=dest)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_a_relative_path_is_taken_from_home(devbox):
    name = "tether-runloop-%d.txt" % os.getpid()
    try:
        devbox.file.write(file_path=name, contents="in home\n")
        assert open(os.path.join(os.environ["HOME"], name)).read() == "in home\n"
        assert devbox.cmd.exec("cat " + name).stdout() == "in home\n"
    finally:
        os.unlink(os.path.join(os.environ["HOME"], name))


def test_file_errors_are_typed(devbox, tmp_path):
    with pytest.raises(NotFoundError):
        devbox.file.read(file_path=str(tmp_path / "missing"))
    with pytest.raises(NotFoundError):
        devbox.file.download(path=str(tmp_path / "missing"))
    with pytest.raises(BadRequestError):
        devbox.file.read(file_path=str(tmp_path))


def test_unknown_executions_and_unserved_routes_are_refused(sdk):
    api = sdk.api.with_options(max_retries=0)
    with pytest.raises(NotFoundError):
        api.devboxes.executions.retrieve("c-0000000000000000", devbox_id="local")
    with pytest.raises(APIStatusError) as e:
        api.devboxes.snapshot_disk("local")
    assert e.value.status_code == 501 and "not served" in str(e.value.body)
    with pytest.raises(BadRequestError):
        api.devboxes.execute_async("local", command="   ")


def test_a_wrong_token_is_refused(daemon):
    s = sdk_for(daemon, token="wrong", max_retries=0)
    with pytest.raises(AuthenticationError):
        s.api.devboxes.retrieve("local")
    s.close()


def test_the_sandbox_id_names_the_devbox_too():
    from conftest import Daemon

    with Daemon("--sandbox-id", "dbx_mine") as d:
        s = sdk_for(d)
        assert s.devbox.from_id("dbx_mine").cmd.exec("echo hi").stdout() == "hi\n"
        assert s.devbox.from_id("local").get_info().status == "running"
        s.close()


def test_files_are_confined_to_the_files_root(tmp_path):
    from conftest import Daemon

    from runloop_api_client import PermissionDeniedError

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("no")
    with Daemon("--files-root", str(root)) as d:
        s = sdk_for(d, max_retries=0)
        devbox = s.devbox.from_id("local")
        devbox.file.write(file_path="in/a.txt", contents="inside")
        assert (root / "in" / "a.txt").read_text() == "inside"
        assert devbox.file.read(file_path=str(root / "in" / "a.txt")) == "inside"
        with pytest.raises(PermissionDeniedError):
            devbox.file.read(file_path=str(tmp_path / "secret"))
        with pytest.raises(PermissionDeniedError):
            devbox.file.read(file_path="../secret")
        # Commands start in the root too.
        assert devbox.cmd.exec("pwd").stdout() == "%s\n" % os.path.realpath(root)
        s.close()


def test_waits_for_a_status_an_ended_execution_never_reaches_do_not_spin(sdk, devbox):
    # Each such wait holds until its deadline; while several do, the
    # daemon (a worker thread per core) still answers at once.
    import threading

    ex = devbox.cmd.exec_async("true")
    ex.result()
    api = sdk.api.with_options(max_retries=0)
    codes = []

    def hold():
        try:
            api.devboxes.wait_for_command(ex.execution_id, devbox_id="local", statuses=["running"], timeout_seconds=3)
        except APIStatusError as e:
            codes.append(e.status_code)

    threads = [threading.Thread(target=hold) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the holds are in (nothing to await from outside)
    t0 = time.monotonic()
    assert api.devboxes.executions.retrieve(ex.execution_id, devbox_id="local").status == "completed"
    assert time.monotonic() - t0 < 1.0
    for t in threads:
        t.join(20)
    assert codes == [408] * 6


def test_axums_own_refusals_come_in_the_dialects_shape(sdk, tmp_path):
    api = sdk.api.with_options(max_retries=0)
    # A method a served path does not take: devbox create is not served.
    with pytest.raises(APIStatusError) as e:
        api.devboxes.create()
    assert e.value.status_code == 501 and e.value.body["error"]["code"] == "not_implemented"
    # A body over the JSON routes' limit.
    with pytest.raises(APIStatusError) as e:
        api.devboxes.execute_async("local", command="x" * (3 << 20))
    assert e.value.status_code == 413 and e.value.body["error"]["code"] == "payload_too_large"
    # An upload's path part is bounded.
    with pytest.raises(BadRequestError):
        api.devboxes.upload_file("local", path="a/" * 4096, file=b"x")


def test_a_large_write_is_charged_to_the_daemons_body_budget(tmp_path):
    from conftest import Daemon

    from runloop_api_client import RateLimitError

    with Daemon("--max-body-memory", str(1 << 20)) as d:
        s = sdk_for(d, max_retries=0)
        devbox = s.devbox.from_id("local")
        p = str(tmp_path / "big.txt")
        with pytest.raises(RateLimitError) as e:
            devbox.file.write(file_path=p, contents="x" * (2 << 20))
        assert e.value.body["error"]["code"] == "limit_exceeded", (e.value.status_code, e.value.body)
        assert e.value.response.headers.get("retry-after") == "1"
        devbox.file.write(file_path=p, contents="y" * (512 << 10))
        assert len(devbox.file.read(file_path=p)) == 512 << 10
        s.close()
