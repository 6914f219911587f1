"""The seed idioms: each test is written the way that SDK's own docs show it
(the original is quoted in its docstring), translated to tether's names,
with the sync client and the async one."""

import hashlib
import io
import os

import tether


def test_runta_buffered_exec_of_a_string_and_an_argv(client, tmp_path):
    """Runta:
    res = r.exec("echo out; echo err >&2; exit 3")
    r.exec(["printf", "%s|", "a b"], cwd="/tmp", env={"X": "1"}, stdin=b"")
    r.exec("sleep 5", timeout=1)
    """
    res = client.exec("echo out; echo err >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    r = client.exec(
        ["sh", "-c", 'printf "%s|" "$X" "$(pwd)"; cat'], cwd=str(tmp_path), env={"X": "1"}, stdin=b"in"
    )
    assert r.stdout == f"1|{tmp_path}|in".encode()
    assert client.exec("sleep 5", timeout=1).timed_out
    r = client.exec("yes | head -c 100000", max_output_bytes=4096)
    assert (len(r.stdout), r.truncated) == (4096, True)


def test_runta_detached_exec_awaited_later(client):
    """Runta:
    fut = r.exec_detached("sleep 1; echo bg"); assert fut.result().stdout == b"bg\\n"
    """
    fut = client.exec_detached("sleep 0.5; echo bg")
    assert fut.result.stdout == b"bg\n"


def test_runta_files_write_read_upload_download_with_a_directory(client, daemon, tmp_path):
    """Runta:
    r.files.write("/tmp/x/a.sh", "#!/bin/sh\\necho hi\\n", executable=True)
    r.files.upload("./localdir", "/tmp/x/dir"); r.files.download("/tmp/x/dir", "./out/")
    """
    base = os.path.join(daemon.root, "runta-" + os.urandom(4).hex())
    client.files.write(f"{base}/a.sh", "#!/bin/sh\necho hi\n", mode=0o755, parents=True)
    assert client.files.read(f"{base}/a.sh").startswith(b"#!")
    assert client.exec([f"{base}/a.sh"]).stdout == b"hi\n"
    local = tmp_path / "localdir"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "f.bin").write_bytes(os.urandom(300000))
    (local / "top.txt").write_text("top\n")
    client.files.upload(str(local), f"{base}/dir")
    assert client.exec(["cat", f"{base}/dir/top.txt"]).stdout == b"top\n"
    client.files.download(f"{base}/dir", str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "f.bin").read_bytes() == (local / "sub" / "f.bin").read_bytes()


def test_contree_run_with_io_objects_and_a_files_mapping_and_popen_communicate(client):
    """ConTree:
    r = img.run(shell="cat /data/f", files={"/data/f": b"FILE"}, stdin="ignored").wait()
    p = s.popen(["cat"], text=True); out, err = p.communicate("a\\n")
    p = s.popen("exit 2", shell=True, stdout=subprocess.PIPE); p.wait(); p.returncode == 2
    """
    name = "/tmp/contree-" + os.urandom(4).hex()
    out, err = io.BytesIO(), io.StringIO()
    p = client.popen(
        f"cat {name}/f; echo oops >&2", shell=True, stdout=out, stderr=err, files={f"{name}/f": b"FILE"}
    )
    assert p.wait(timeout=20) == 0
    assert (out.getvalue(), err.getvalue()) == (b"FILE", "oops\n")
    p = client.popen(["cat"], stdin=tether.PIPE, stdout=tether.PIPE, text=True)
    assert p.communicate("a\n", timeout=20) == ("a\n", None)
    assert p.returncode == 0
    p = client.popen("exit 2", shell=True, stdout=tether.PIPE)
    p.wait(timeout=20)
    assert p.returncode == 2


def test_daytona_exec_code_run_and_a_session_whose_async_command_logs_come_later(client):
    """Daytona:
    r = sandbox.process.exec("echo hi", cwd="/tmp", env={"A": "1"}, timeout=10); r.result, r.exit_code
    r = sandbox.process.code_run('print("x")')
    sandbox.process.create_session("s")
    c = sandbox.process.execute_session_command("s", SessionExecuteRequest(command="...", run_async=True))
    sandbox.process.get_session_command_logs("s", c.cmd_id)
    """
    r = client.exec("echo $A; pwd", cwd="/tmp", env={"A": "1"}, timeout=10)
    assert (r.output_text, r.exit_code) == ("1\n/tmp\n", 0)
    assert client.code_run('print("x")').stdout == b"x\n"
    with client.shell("daytona-" + os.urandom(4).hex()) as session:
        c = session.exec("for i in 1 2 3; do echo log $i; done; echo warn >&2", wait=False)
        cmd_id = c.command_id
        c.wait(timeout=20)
        logs = b"".join(client.logs(cmd_id))
        assert sorted(logs.splitlines()) == [b"log 1", b"log 2", b"log 3", b"warn"]
        assert client.status(cmd_id).exit.code == 0


def test_runloop_named_shell_keeps_cwd_and_env_across_queued_commands(client):
    """Runloop:
    shell = devbox.shell("my-shell")
    shell.exec("cd /tmp && export FOO=bar")
    shell.exec_async("echo $FOO; pwd")
    """
    shell = client.shell("runloop-" + os.urandom(4).hex())
    first = shell.exec("cd /tmp && export FOO=bar", wait=False)
    second = shell.exec("echo $FOO; pwd", wait=False)
    assert first.wait(timeout=20).exit_code == 0
    assert second.wait(timeout=20).stdout == b"bar\n/tmp\n"
    shell.close()


def test_langsmith_run_with_callbacks_and_a_handle(client):
    """LangSmith:
    sb.run("make", on_stdout=lambda s: ..., on_stderr=lambda s: ...)
    handle = sb.run("sleep 1; echo done", wait=False); handle.result.exit_code
    """
    got = {"out": b"", "err": b""}
    result = client.run(
        "seq 1 2000; echo oops >&2",
        on_stdout=lambda b: got.__setitem__("out", got["out"] + b),
        on_stderr=lambda b: got.__setitem__("err", got["err"] + b),
    )
    assert hashlib.sha256(got["out"]).digest() == hashlib.sha256(result.stdout).digest()
    assert got["out"].splitlines()[-1] == b"2000" and got["err"] == b"oops\n"
    handle = client.run("sleep 0.3; echo done", wait=False)
    assert handle.command_id and handle.pid
    assert (handle.result.exit_code, handle.result.stdout) == (0, b"done\n")
