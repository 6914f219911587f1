"""The unchanged runta-sdk (sync `Runta`) against a real tether daemon
through /compat/runta."""
import hashlib
import json
import os
import threading
import urllib.error
import urllib.request

import pytest
from runta import ApiError, Runta, RuntimeStatus

from conftest import CuttableProxy, Daemon, tether_cli, url
import time

from support import Gate, make_tree, observers_started, tree, wait_for


@pytest.fixture(scope="module")
def client(daemon):
    with Runta(endpoint=url(daemon), token=daemon.token, retry_max_attempts=2, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def rt(client):
    return client.runtimes.get("local")


def test_health_and_runtime(client, rt):
    assert client.health() is True
    assert rt.id == "local"
    info = rt.refresh_info()
    assert info.status == RuntimeStatus.RUNNING
    assert info.display_name == "local"


def test_runtime_json_has_every_required_key(daemon):
    req = urllib.request.Request(url(daemon) + "/v2/runtimes/local",
                                 headers={"Authorization": "Bearer " + daemon.token})
    data = json.load(urllib.request.urlopen(req, timeout=10))["data"]
    required = {"id", "display_name", "status", "desired_status", "created_at", "updated_at", "image_id",
                "egress_policy", "idle_policy", "llm_tool_io_capture_enabled",
                "llm_session_content_capture_enabled", "llm_token_saving_policy", "ingress_specs", "resources",
                "degraded", "ssh_enabled", "vnc_enabled", "vnc_ready", "vnc_connection", "owner_user_id",
                "can_manage", "revision", "secret_configuration"}
    assert len(required) == 23 and required <= set(data)


def test_list_fallback_and_unknown_runtime(client):
    assert [r.id for r in client.runtimes.list()] == ["local"]
    assert client.runtimes.list(status="paused") == []
    with pytest.raises(ApiError) as e:
        client.runtimes.get("no-such-runtime")
    assert (e.value.status_code, e.value.code) == (404, "not_found")
    assert "no-such-runtime" in str(e.value)


def test_lifecycle_is_refused_in_the_envelope(rt):
    for call in (rt.pause, rt.shutdown):
        with pytest.raises(ApiError) as e:
            call()
        assert (e.value.status_code, e.value.code) == (501, "unimplemented")
        assert "not served by tether" in str(e.value)


def test_shell_exec_exit_code_and_streams(rt):
    r = rt.exec("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert not r.stdout_truncated and not r.stderr_truncated


def test_argv_cwd_env_stdin(rt, tmp_path):
    assert rt.exec(["printf", "%s|", "a b", "c"]).stdout == b"a b|c|"
    assert rt.exec("pwd", cwd=str(tmp_path)).stdout == f"{tmp_path}\n".encode()
    assert rt.exec(["pwd"], cwd=str(tmp_path)).stdout == f"{tmp_path}\n".encode()
    assert rt.exec("echo $X-$Y", env={"X": "1", "Y": "two words"}).stdout == b"1-two words\n"
    assert rt.exec("cat", stdin=b"\x00\xffbytes").stdout == b"\x00\xffbytes"
    assert rt.exec(["cat"], stdin="héllo").stdout == "héllo".encode()


def test_timeout_is_124_with_the_message(rt):
    r = rt.exec("echo before; sleep 30", timeout=1)
    assert r.exit_code == 124
    assert r.stdout == b"before\n"
    assert r.stderr.endswith(b"Command timed out after 1 seconds.")


def test_max_output_bytes_truncates(rt):
    r = rt.exec("head -c 100 /dev/zero; head -c 10 /dev/zero >&2", max_output_bytes=50)
    assert (len(r.stdout), r.stdout_truncated) == (50, True)
    assert (len(r.stderr), r.stderr_truncated) == (10, False)


def test_5mb_stdout_and_stderr_byte_exact(rt, tmp_path):
    data = os.urandom(5_000_000)
    src = tmp_path / "big.bin"
    rt.files.write(str(src), data)
    want = hashlib.sha256(data).hexdigest()
    out = rt.exec(["cat", str(src)], max_output_bytes=6 << 20)
    assert hashlib.sha256(out.stdout).hexdigest() == want and not out.stdout_truncated
    err = rt.exec(f"cat {src} >&2", max_output_bytes=6 << 20)
    assert hashlib.sha256(err.stderr).hexdigest() == want and err.stdout == b""


def test_exec_detached_awaited_later(rt, tmp_path):
    gate = Gate(str(tmp_path))
    fut = rt.exec_detached(gate.wait_cmd + "; exit 7")
    gate.wait_started()
    # Another exec meanwhile.
    assert rt.exec("echo meanwhile").stdout == b"meanwhile\n"
    assert not fut.done()
    gate.open()
    r = fut.result(timeout=30)
    assert (r.exit_code, r.stdout) == (7, b"released go\n")


def test_files_write_read_executable(rt, tmp_path):
    p = tmp_path / "sub" / "a.sh"
    rt.files.write(str(p), "#!/bin/sh\necho hi\n", executable=True)
    assert rt.files.read(str(p)) == b"#!/bin/sh\necho hi\n"
    assert os.stat(p).st_mode & 0o777 == 0o755
    assert rt.exec([str(p)]).stdout == b"hi\n"
    rt.files.write(str(p), b"\x00bin")
    assert rt.files.read(str(p)) == b"\x00bin"
    assert rt.files.read(str(p), max_bytes=1) == b"\x00"


def test_missing_file_is_not_found(rt, tmp_path):
    with pytest.raises(ApiError) as e:
        rt.files.read(str(tmp_path / "nope"))
    assert (e.value.status_code, e.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as e:
        rt.files.read(str(tmp_path))
    assert (e.value.status_code, e.value.code) == (422, "invalid_argument")


def test_upload_download_file(rt, tmp_path):
    src = tmp_path / "one.bin"
    src.write_bytes(os.urandom(300_000))
    remote = tmp_path / "remote" / "one.bin"
    rt.files.upload(str(src), str(remote))
    assert remote.read_bytes() == src.read_bytes()
    rt.files.upload(str(src), str(tmp_path / "into") + "/")
    assert (tmp_path / "into" / "one.bin").read_bytes() == src.read_bytes()
    back = tmp_path / "back.bin"
    rt.files.download(str(remote), str(back))
    assert back.read_bytes() == src.read_bytes()


def test_upload_download_tree(rt, tmp_path):
    local = make_tree(str(tmp_path / "local"))
    remote = str(tmp_path / "remote-tree")
    rt.files.upload(local, remote)
    assert tree(remote) == tree(local)
    down = tmp_path / "down"
    rt.files.download(remote, str(down) + "/")
    assert tree(str(down / "remote-tree")) == tree(local)
    merged = tmp_path / "merged"
    rt.files.download_dir_contents(remote, str(merged))
    assert tree(str(merged)) == tree(local)


def test_wrong_token_is_refused(daemon):
    with Runta(endpoint=url(daemon), token="wrong", retry_max_attempts=1) as c:
        with pytest.raises(ApiError) as e:
            c.runtimes.get("local")
        assert e.value.status_code == 401
        # In the SDK's envelope: its error carries the code.
        assert getattr(e.value, "code", None) == "unauthenticated", vars(e.value)
        with pytest.raises(ApiError):
            c.health()


def test_unknown_runtime_on_the_exec_stream_is_404(daemon):
    req = urllib.request.Request(url(daemon) + "/v2/runtimes/other/exec/stream",
                                 headers={"Authorization": "Bearer " + daemon.token})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 404
    body = json.load(e.value)
    assert body["error"]["code"] == "not_found" and "request_id" in body


def test_a_dialect_command_is_listed_natively(rt, daemon, tmp_path):
    gate = Gate(str(tmp_path))
    fut = rt.exec_detached(gate.wait_cmd)
    gate.wait_started()
    ls = tether_cli(daemon, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    listed = json.loads(ls.stdout)
    commands = listed["commands"] if isinstance(listed, dict) else listed
    ours = [c for c in commands if c.get("labels", {}).get("runta.exec") == "local" and c.get("exit") is None]
    assert ours, ls.stdout
    gate.open()
    assert fut.result(timeout=30).stdout == b"released go\n"


def test_exec_survives_a_cut_websocket(daemon, tmp_path):
    proxy = CuttableProxy(daemon.url)
    try:
        with Runta(endpoint=proxy.url + "/compat/runta", token=daemon.token, retry_max_attempts=3) as c:
            rt = c.runtimes.get("local")
            gate = Gate(str(tmp_path))
            since = int(time.time() * 1000) - 1000
            fut = rt.exec_detached(gate.wait_cmd + "; head -c 200000 /dev/zero | tr '\\0' x")
            gate.wait_started()
            proxy.cut_all()
            gate.open()
            r = fut.result(timeout=45)
            assert r.exit_code == 0
            assert r.stdout == b"released go\n" + b"x" * 200000
            # The SDK observed it again through a new connection.
            assert observers_started(daemon, since) >= 1
    finally:
        proxy.close()


def test_exec_survives_a_graceful_restart(tmp_path):
    with Daemon() as d:
        with Runta(endpoint=url(d), token=d.token, retry_max_attempts=5) as c:
            rt = c.runtimes.get("local")
            gate = Gate(str(tmp_path))
            since = int(time.time() * 1000) - 1000
            fut = rt.exec_detached(gate.wait_cmd + "; echo err >&2; exit 5")
            gate.wait_started()
            d.wait_lines(d.restart())
            gate.open()
            r = fut.result(timeout=45)
            assert (r.exit_code, r.stdout, r.stderr) == (5, b"released go\n", b"err\n")
            assert observers_started(d, since) >= 1
            # The restarted daemon serves new execs.
            assert rt.exec("echo again").stdout == b"again\n"
