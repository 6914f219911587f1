"""Runs through the unchanged sync SDK (ContreeSync): shell and argv, env, cwd, stdin, every output type, truncation,
files, timeouts, popen, sessions, and the image's read/ls/download."""
import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
from conftest import commands, wait_for

from contree_sdk.sdk.exceptions import DisposableImageRunError, OperationTimedOutError
from contree_sdk.utils.models.file import UploadFileSpec


def test_shell_run_with_env_cwd_and_exit_code(img, daemon):
    r = img.run(shell='echo "out $A"; echo err >&2; pwd; exit 3', env={"A": "1"}, cwd=daemon.root).wait()
    assert (r.exit_code, r.stdout, r.stderr) == (3, f"out 1\n{os.path.realpath(daemon.root)}\n", "err\n")
    assert r.result.truncated is False
    assert r.elapsed.total_seconds() >= 0


def test_argv_run_keeps_arguments_whole(img):
    r = img.run("printf", args=["[%s]", "a b", "it's", ""], stdout=bytes).wait()
    assert (r.exit_code, r.stdout) == (0, b"[a b][it's][]")


def test_shell_args_are_quoted_words(img):
    assert img.run(shell="printf '[%s]'", args=["a b", "$HOME"]).wait().stdout == "[a b][$HOME]"


@pytest.mark.parametrize("stdin,expect", [
    ("text in\n", b"text in\n"),
    (b"\x00\xffbytes", b"\x00\xffbytes"),
])
def test_stdin_str_and_bytes(img, stdin, expect):
    assert img.run("cat", stdin=stdin, stdout=bytes).wait().stdout == expect


def test_stdin_from_file_and_path(img, tmp_path):
    p = tmp_path / "in.bin"
    p.write_bytes(b"from a file\x01" * 1000)
    assert img.run("cat", stdin=p, stdout=bytes).wait().stdout == p.read_bytes()
    with open(p, "rb") as f:
        assert img.run("sha256sum", stdin=f).wait().stdout.split()[0] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_every_output_type(img, tmp_path):
    script = "printf 'o\\303\\251'; printf 'e' >&2"
    r = img.run(shell=script).wait()
    assert (r.stdout, r.stderr) == ("oé", "e")
    r = img.run(shell=script, stdout=bytes, stderr=bytes).wait()
    assert (r.stdout, r.stderr) == (b"o\xc3\xa9", b"e")
    sio, bio = io.StringIO(), io.BytesIO()
    r = img.run(shell=script, stdout=sio, stderr=bio).wait()
    assert (sio.getvalue(), bio.getvalue()) == ("oé", b"e")
    assert r.stdout is sio
    r = img.run(shell=script, stdout=subprocess.PIPE).wait()
    assert r.stdout.read() == b"o\xc3\xa9"
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    r = img.run(shell=script, stdout=str(out), stderr=err).wait()
    r.stdout.close()
    r.stderr.close()
    assert (out.read_bytes(), err.read_bytes()) == (b"o\xc3\xa9", b"e")


def test_five_megabytes_byte_exact(img, daemon):
    big = Path(daemon.root) / "big.bin"
    big.write_bytes(os.urandom(5 << 20))
    r = img.run("cat", args=[str(big)], stdout=bytes, truncate_output_at=6 << 20).wait()
    assert r.result.truncated is False
    assert len(r.stdout) == 5 << 20
    assert hashlib.sha256(r.stdout).hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()


def test_truncation_flag(img):
    r = img.run(shell="head -c 100000 /dev/zero | tr '\\0' a; echo e >&2", truncate_output_at=1000).wait()
    assert r.result.truncated is True
    assert r.stdout == "a" * 1000 and r.stderr == "e\n"
    assert img.run(shell="printf 12345", truncate_output_at=5).wait().result.truncated is False
    assert img.run(shell="printf 123456", truncate_output_at=5).wait().result.truncated is True


def test_files_are_injected_and_deduplicated(client, img, daemon, tmp_path):
    uploads = []
    real = client._api.upload_file

    async def counting(data):
        uploads.append(1)
        return await real(data)

    client._api.upload_file = counting
    content = os.urandom(200_000)
    local = tmp_path / "local.bin"
    local.write_bytes(b"from disk")
    dst = os.path.join(daemon.root, "inj", "deep", "f.bin")
    dst2 = os.path.join(daemon.root, "inj", "x.sh")
    r = img.run(
        shell=f"sha256sum < {dst}; stat -c %a {dst} {dst2}; {dst2}",
        files={dst: content, dst2: UploadFileSpec(source=local, mode=0o755)},
    ).wait()
    lines = r.stdout.splitlines()
    assert lines[0].split()[0] == hashlib.sha256(content).hexdigest()
    assert lines[1:3] == ["644", "755"]
    assert r.exit_code != 0  # "from disk" is not a command: the file was run, so it is executable
    assert len(uploads) == 2
    # The same content again: probed by SHA-256, found, not sent.
    dst3 = os.path.join(daemon.root, "inj", "again.bin")
    r = img.run(shell=f"cmp {dst} {dst3} && echo same", files={dst3: content}).wait()
    assert r.stdout == "same\n"
    assert len(uploads) == 2
    # files.upload (by path) answers the same content-addressed UUID.
    local.write_bytes(content)
    up = client.files.upload(local)
    assert up.sha256 == hashlib.sha256(content).hexdigest()
    assert len(uploads) == 2


def test_apply_files_then_read_back(img, daemon):
    dst = os.path.join(daemon.root, "applied.txt")
    applied = img.apply_files(files={dst: b"applied\n"})
    assert applied.uuid is not None
    assert applied.read(dst) == b"applied\n"


def test_timeout_kills_the_command(img, daemon):
    try:
        r = img.run(shell="echo started; exec sleep 30", timeout=1).wait()
    except OperationTimedOutError:
        pass  # the SDK's own deadline came first; the daemon's still kills it
    else:
        assert r.result._raw.result.state.timed_out is True
        assert r.exit_code == 128 + 15 and r.stdout == "started\n"
    wait_for(lambda: not [c for c in commands(daemon) if "sleep 30" in " ".join(c["argv"]) and c.get("exit") is None],
             "the timed-out command to end")


def test_popen(img):
    p = img.popen(["cat"], text=True)
    out, err = p.communicate("a\n")
    assert (out, err, p.returncode) == ("a\n", "", 0)
    p = img.popen("echo hi; exit 2", shell=True, stdout=subprocess.PIPE)
    assert p.wait() is None
    assert p.returncode == 2
    assert p.stdout.read() == b"hi\n"
    with pytest.raises(subprocess.CalledProcessError) as e:
        img.popen(["sh", "-c", "exit 5"], check=True).wait()
    assert e.value.returncode == 5
    p = img.popen(["env"], env={"POPEN_VAR": "v"}, text=True)
    out, _ = p.communicate()
    assert "POPEN_VAR=v" in out.splitlines()


def test_session_keeps_linear_state(img, daemon, client):
    s = img.session()
    f = os.path.join(daemon.root, "session.txt")
    s.run(shell=f"echo 1 > {f}", disposable=False).wait()
    host = client.images.use("local", strict=True).uuid
    assert s.uuid == host
    s.run(shell=f"echo 2 >> {f}", disposable=False).wait()
    assert s.run(shell=f"cat {f}", disposable=False).wait().stdout == "1\n2\n"
    # A linear chain through result images.
    r = img.run(shell=f"echo 3 >> {f}", disposable=False).wait().run(shell=f"cat {f}", disposable=False).wait()
    assert r.stdout == "1\n2\n3\n" and r.uuid == host
    # A disposable run has no result image: the session cannot go on from it.
    s.run(shell="true").wait()
    assert s.uuid is None
    with pytest.raises(DisposableImageRunError):
        s.run(shell="true")


def test_read_ls_download_by_tag_and_uuid(client, img, daemon, tmp_path):
    d = os.path.join(daemon.root, "tree")
    img.run(shell=f"mkdir -p {d}/sub && printf data > {d}/f && ln -sf f {d}/link", disposable=False).wait()
    for image in (img, client.images.use(client.images.use("local", strict=True).uuid)):
        assert image.read(f"{d}/f") == b"data"
        entries = {e.name: e for e in image.ls(d)}
        assert set(entries) == {"f", "sub", "link"}
        assert entries["sub"].is_dir and not entries["f"].is_dir
        assert entries["f"].size == 4 and entries["f"].is_regular
        assert entries["link"].is_symlink and entries["link"].symlink_to == "f"
        assert entries["f"].read() == b"data"
        assert [e.name for e in entries["sub"].ls()] == []
        got = image.download(f"{d}/f", tmp_path / "dl")
        assert Path(got).read_bytes() == b"data"
