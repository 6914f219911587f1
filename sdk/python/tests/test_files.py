"""Files over HTTP (`client.files`), against a real daemon, with the sync
client and the async one: reads, atomic writes from every kind of source,
streams, stat/list/mkdir/remove/rename, typed errors, whole files and trees
copied both ways, progress, and a daemon confined by --files-root."""

import asyncio
import hashlib
import io
import os
import pathlib
import socket
import stat
import tarfile
import threading
import uuid

import httpx
import pytest
from tether_testing import Daemon

import tether
from conftest import make_client
from tether import _files
from tether._files import AsyncFiles, FileStat

MiB = 1 << 20


@pytest.fixture
def base(daemon):
    """A fresh directory under the daemon's files root, by its relative
    name (the local path is `os.path.join(daemon.root, base)`)."""
    name = "files-" + uuid.uuid4().hex[:12]
    os.mkdir(os.path.join(daemon.root, name))
    return name


def local(daemon, *parts):
    return os.path.join(daemon.root, *parts)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def snapshot(root):
    """Every entry below `root` by relative path: kind, permission bits,
    and the bytes' hash or the link's target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), sha(f.read()))
    return out


def make_tree(root):
    """Nested directories, an empty one, a private one, a symlink, an
    executable, a private file and a 5 MiB file."""
    os.makedirs(os.path.join(root, "a", "b", "c"))
    os.makedirs(os.path.join(root, "empty"))
    os.makedirs(os.path.join(root, "private"))
    os.chmod(os.path.join(root, "private"), 0o700)
    files = {
        "a/b/c/deep.txt": (b"deep\n", 0o644),
        "a/top.txt": (b"top\n", 0o644),
        "run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        "private/key": (b"\x00secret\xff", 0o600),
        "big.bin": (os.urandom(5 * MiB), 0o644),
    }
    for name, (data, mode) in files.items():
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    os.symlink("a/b/c/deep.txt", os.path.join(root, "link"))
    return snapshot(root)


class Calls:
    """A progress callback that records its calls and the threads they
    ran on."""

    def __init__(self):
        self.calls = []
        self.threads = set()

    def __call__(self, done, total):
        self.calls.append((done, total))
        self.threads.add(threading.get_ident())

    def check(self, size, total):
        done = [d for d, _ in self.calls]
        assert self.calls, "never called"
        # Strictly increasing: every call reports new bytes.
        assert all(a < b for a, b in zip(done, done[1:])), done
        assert {t for _, t in self.calls} == {total}
        assert done[-1] == size


# Reading and writing.


def test_bytes_and_text_round_trip_and_write_answers_the_stat(client, daemon, base):
    data = bytes(range(256)) * 3
    st = client.files.write(f"{base}/bin", data)
    assert isinstance(st, FileStat)
    assert (st.name, st.kind, st.size, st.is_file, st.is_dir, st.is_symlink) == (
        "bin",
        "file",
        768,
        True,
        False,
        False,
    )
    assert st.target is None
    assert st.mtime_ms > 0
    assert client.files.read(f"{base}/bin") == data
    with open(local(daemon, base, "bin"), "rb") as f:
        assert f.read() == data

    client.files.write(f"{base}/text", "l\u00efne 1\n\u263a\n")
    assert client.files.read(f"{base}/text") == "l\u00efne 1\n\u263a\n".encode()
    assert client.files.read_text(f"{base}/text") == "l\u00efne 1\n\u263a\n"
    client.files.write(f"{base}/latin", "caf\u00e9".encode("latin-1"))
    assert client.files.read_text(f"{base}/latin", encoding="latin-1") == "caf\u00e9"
    with pytest.raises(UnicodeDecodeError):
        client.files.read_text(f"{base}/latin")
    assert client.files.read_text(f"{base}/latin", errors="replace") == "caf\ufffd"

    assert client.files.read(f"{base}/bin", max_bytes=10) == data[:10]
    assert client.files.read(f"{base}/bin", max_bytes=0) == b""
    client.files.write(f"{base}/empty", b"")
    assert client.files.read(f"{base}/empty") == b""
    # A path object works too.
    assert client.files.read(pathlib.PurePosixPath(base, "bin")) == data


def test_write_takes_a_file_object_or_chunks_read_off_the_loop(client, daemon, base, tmp_path):
    src = tmp_path / "src.bin"
    payload = os.urandom(MiB + 123)
    src.write_bytes(payload)
    with open(src, "rb") as f:
        assert client.files.write(f"{base}/from-file", f).size == len(payload)
    assert client.files.read(f"{base}/from-file") == payload

    # A file object is read from where it stands.
    buf = io.BytesIO(b"skip:the rest")
    buf.seek(5)
    client.files.write(f"{base}/from-bytesio", buf)
    assert client.files.read(f"{base}/from-bytesio") == b"the rest"

    # A generator runs on a worker thread, never on the loop's (where the
    # progress callback runs).
    gen_threads = set()

    def chunks():
        for i in range(5):
            gen_threads.add(threading.get_ident())
            yield bytes([i]) * 100_000

    progress = Calls()
    client.files.write(f"{base}/from-gen", chunks(), progress=progress)
    assert client.files.read(f"{base}/from-gen") == b"".join(bytes([i]) * 100_000 for i in range(5))
    assert gen_threads
    assert not gen_threads & progress.threads
    progress.check(500_000, None)

    async def achunks():
        for part in (b"async ", bytearray(b"chunks "), memoryview(b"too")):
            yield part

    client.files.write(f"{base}/from-agen", achunks())
    assert client.files.read(f"{base}/from-agen") == b"async chunks too"
    client.files.write(f"{base}/from-list", [b"a", b"b", b"c"])
    assert client.files.read(f"{base}/from-list") == b"abc"
    client.files.write(f"{base}/from-view", memoryview(b"view"))
    assert client.files.read(f"{base}/from-view") == b"view"

    with pytest.raises(TypeError, match="binary mode"):
        client.files.write(f"{base}/text-io", io.StringIO("text"))
    with pytest.raises(TypeError, match="not int"):
        client.files.write(f"{base}/int", 42)
    # A failed write leaves nothing behind.
    assert not os.path.exists(local(daemon, base, "text-io"))


def test_parents_mode_and_refused_writes(client, daemon, base):
    big = b"x" * (4 * MiB)
    # The daemon refuses before reading the body; the error still arrives
    # typed, even for a body far larger than the socket buffers.
    for data in (b"small", big):
        with pytest.raises(tether.FileNotFound) as e:
            client.files.write(f"{base}/x/y/z", data)
        assert e.value.path == f"{base}/x/y/z"
        assert e.value.kind == "not_found"
    st = client.files.write(f"{base}/x/y/z", big, parents=True)
    assert st.size == len(big)
    assert os.path.getsize(local(daemon, base, "x", "y", "z")) == len(big)

    st = client.files.write(f"{base}/private", b"s", mode=0o600)
    assert st.mode == 0o600
    assert stat.S_IMODE(os.stat(local(daemon, base, "private")).st_mode) == 0o600
    # A rewrite keeps the mode unless told otherwise.
    assert client.files.write(f"{base}/private", b"t").mode == 0o600
    assert client.files.write(f"{base}/private", b"u", mode=0o751).mode == 0o751
    with pytest.raises(ValueError, match="permission bits"):
        client.files.write(f"{base}/bad-mode", b"", mode=0o17777)

    for data in (b"small", big):
        with pytest.raises(tether.FileError) as e:
            client.files.write(f"{base}/x", data)
        assert e.value.kind == "is_a_directory"
        assert e.value.path == f"{base}/x"
        with pytest.raises(tether.FileError) as e:
            client.files.write(f"{base}/private/under-a-file", data)
        assert e.value.kind == "not_a_directory"
    assert client.files.list(f"{base}/x") == [client.files.stat(f"{base}/x/y")]


def test_a_large_file_streams_in_chunks(client, daemon, base):
    data = os.urandom(6 * MiB + 7)
    with open(local(daemon, base, "big"), "wb") as f:
        f.write(data)
    chunks = list(client.files.stream(f"{base}/big", chunk_size=256 * 1024))
    assert len(chunks) >= 2
    assert all(0 < len(c) <= 256 * 1024 for c in chunks)
    assert sha(b"".join(chunks)) == sha(data)

    # Stopping early: the block closes the request.
    with client.files.stream(f"{base}/big") as s:
        assert s.size == len(data)
        first = next(iter(s))
        assert first == data[: len(first)]
    # The connection pool is still fine afterwards.
    assert client.files.read(f"{base}/big", max_bytes=4) == data[:4]

    with pytest.raises(tether.FileNotFound):
        list(client.files.stream(f"{base}/missing"))
    with pytest.raises(ValueError, match="positive"):
        client.files.stream(f"{base}/big", chunk_size=0)


# Stat, list, mkdir, remove, rename.


def test_stat_list_exists_and_mkdir(client, daemon, base):
    d = client.files.mkdir(f"{base}/d", mode=0o700)
    assert (d.name, d.kind, d.is_dir, d.mode) == ("d", "dir", True, 0o700)
    with pytest.raises(tether.FileExists) as e:
        client.files.mkdir(f"{base}/d")
    assert isinstance(e.value, FileExistsError)
    assert e.value.kind == "exists"
    assert client.files.mkdir(f"{base}/d", parents=True).is_dir
    with pytest.raises(tether.FileNotFound):
        client.files.mkdir(f"{base}/p/q/r")
    assert client.files.mkdir(f"{base}/p/q/r", parents=True).name == "r"
    assert os.path.isdir(local(daemon, base, "p", "q", "r"))

    client.files.write(f"{base}/f.txt", b"12345")
    os.symlink("d", local(daemon, base, "ln"))
    ln = client.files.stat(f"{base}/ln")
    assert (ln.kind, ln.is_symlink, ln.target) == ("symlink", True, "d")
    f = client.files.stat(f"{base}/f.txt")
    assert (f.size, f.mode, f.is_file) == (5, 0o644, True)
    assert abs(f.mtime_ms - os.stat(local(daemon, base, "f.txt")).st_mtime_ns // 1_000_000) <= 1

    entries = client.files.list(base)
    assert [(e.name, e.kind) for e in entries] == [
        ("d", "dir"),
        ("f.txt", "file"),
        ("ln", "symlink"),
        ("p", "dir"),
    ]
    assert client.files.list(f"{base}/d") == []
    with pytest.raises(tether.FileError) as e:
        client.files.list(f"{base}/f.txt")
    assert e.value.kind == "not_a_directory"
    # The default is the files root.
    assert base in [e.name for e in client.files.list()]

    for present in ("d", "f.txt", "ln", "p/q"):
        assert client.files.exists(f"{base}/{present}")
    for absent in ("nope", "nope/deeper", "f.txt/under-a-file"):
        assert not client.files.exists(f"{base}/{absent}")


def test_remove_and_rename(client, daemon, base, tmp_path):
    client.files.write(f"{base}/f", b"f")
    client.files.remove(f"{base}/f")
    assert not client.files.exists(f"{base}/f")
    with pytest.raises(tether.FileNotFound) as e:
        client.files.remove(f"{base}/f")
    assert e.value.path == f"{base}/f"

    # A tree with a symlink out of it: removed, never followed.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    client.files.write(f"{base}/t/sub/file", b"x", parents=True)
    os.symlink(str(outside), local(daemon, base, "t", "sub", "out"))
    with pytest.raises(tether.FileExists):
        client.files.remove(f"{base}/t")
    client.files.remove(f"{base}/t", recursive=True)
    assert not os.path.exists(local(daemon, base, "t"))
    assert (outside / "keep").read_text() == "keep"

    client.files.write(f"{base}/a", b"A")
    client.files.write(f"{base}/b", b"B")
    client.files.rename(f"{base}/a", f"{base}/c")
    assert client.files.read(f"{base}/c") == b"A"
    assert not client.files.exists(f"{base}/a")
    with pytest.raises(tether.FileExists) as e:
        client.files.rename(f"{base}/c", f"{base}/b")
    assert isinstance(e.value, FileExistsError)
    assert (e.value.kind, e.value.path, e.value.status) == ("exists", f"{base}/b", 409)
    assert client.files.read(f"{base}/b") == b"B"
    client.files.rename(f"{base}/c", f"{base}/b", overwrite=True)
    assert client.files.read(f"{base}/b") == b"A"
    assert not client.files.exists(f"{base}/c")
    with pytest.raises(tether.FileNotFound) as e:
        client.files.rename(f"{base}/c", f"{base}/d")
    assert e.value.path == f"{base}/c"


# Errors.


def test_errors_are_typed(client, base):
    with pytest.raises(tether.FileNotFound) as e:
        client.files.read(f"{base}/missing")
    err = e.value
    assert isinstance(err, FileNotFoundError)
    assert isinstance(err, tether.FileError)
    assert isinstance(err, tether.TetherError)
    assert (err.kind, err.code, err.path, err.status) == ("not_found", "not_found", f"{base}/missing", 404)
    assert "missing" in str(err)

    client.files.mkdir(f"{base}/dir")
    with pytest.raises(tether.FileError) as e:
        client.files.read(f"{base}/dir")
    assert (e.value.kind, e.value.status) == ("is_a_directory", 400)
    assert not isinstance(e.value, (tether.FileNotFound, tether.FileExists))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_wrong_token_is_an_auth_error(kind, daemon, portal):
    c = make_client(kind, daemon.url, "wrong-" + "x" * 20, portal)
    try:
        with pytest.raises(tether.AuthError):
            c.files.stat("anything")
    finally:
        c.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_no_daemon_is_connection_lost_with_the_cause(kind, portal):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = make_client(kind, f"http://127.0.0.1:{port}", "x" * 20, portal)
    try:
        with pytest.raises(tether.ConnectionLost) as e:
            c.files.read("f")
        assert isinstance(e.value.__cause__, httpx.TransportError)
        with pytest.raises(tether.ConnectionLost):
            c.files.write("f", b"data")
        with pytest.raises(tether.ConnectionLost):
            list(c.files.stream("f"))
    finally:
        c.close()


def test_error_answers_without_a_json_body_still_raise_typed_errors():
    answers = {
        "/v1/files": httpx.Response(413),
        "/v1/files/stat": httpx.Response(400, text="Failed to deserialize query string"),
        "/v1/files/list": httpx.Response(502, html="<h1>Bad Gateway</h1>"),
        "/v1/files/mkdir": httpx.Response(500, json={"code": "io", "message": "disk said no", "errno": 5}),
        "/v1/files/tar": httpx.Response(200, json={"name": 1}),
        "/v1/files/rename": httpx.Response(404),
    }

    async def go():
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda req: answers[req.url.path]), base_url="http://daemon"
        ) as http:
            files = AsyncFiles(http)
            with pytest.raises(tether.FileError) as e:
                await files.write("f", b"x" * 100)
            assert (e.value.kind, e.value.status, e.value.path) == ("too_large", 413, "f")
            assert "413" in str(e.value)
            with pytest.raises(tether.FileError) as e:
                await files.read("f")
            assert e.value.kind == "too_large"
            with pytest.raises(tether.BadRequest, match="deserialize"):
                await files.stat("f")
            with pytest.raises(tether.FileError) as e:
                await files.list("d")
            assert (e.value.kind, e.value.status) == ("io", 502)
            assert "Bad Gateway" in str(e.value)
            with pytest.raises(tether.FileError) as e:
                await files.mkdir("d")
            assert (e.value.kind, e.value.errno, str(e.value)) == ("io", 5, "disk said no")
            with pytest.raises(tether.FileNotFound) as e:
                await files.rename("a", "b")
            assert e.value.status == 404

    asyncio.run(go())


def test_a_malformed_answer_is_a_server_error():
    async def go():
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(
                lambda req: httpx.Response(200, json={"name": "x", "kind": "file"})
            ),
            base_url="http://daemon",
        ) as http:
            with pytest.raises(tether.ServerError, match="not a file stat"):
                await AsyncFiles(http).stat("x")

    asyncio.run(go())


# Whole files and trees.


def test_upload_and_download_a_file(client, daemon, base, tmp_path):
    src = tmp_path / "tool"
    data = os.urandom(3 * MiB + 5)
    src.write_bytes(data)
    os.chmod(src, 0o755)
    up = Calls()
    # Missing parents are made on the daemon.
    client.files.upload(src, f"{base}/bin/deep/tool", progress=up)
    up.check(len(data), len(data))
    st = client.files.stat(f"{base}/bin/deep/tool")
    assert (st.size, st.mode) == (len(data), 0o755)
    with open(local(daemon, base, "bin", "deep", "tool"), "rb") as f:
        assert sha(f.read()) == sha(data)

    # ...and locally.
    dst = tmp_path / "missing" / "dir" / "tool"
    down = Calls()
    client.files.download(f"{base}/bin/deep/tool", str(dst), progress=down)
    down.check(len(data), len(data))
    assert sha(dst.read_bytes()) == sha(data)
    lst = os.stat(dst)
    assert stat.S_IMODE(lst.st_mode) == 0o755
    assert lst.st_mtime_ns // 1_000_000 == st.mtime_ms
    # Nothing else is left next to it (the temporary file is renamed).
    assert os.listdir(dst.parent) == ["tool"]

    # A second download replaces the file.
    client.files.write(f"{base}/bin/deep/tool", b"v2")
    client.files.download(f"{base}/bin/deep/tool", dst)
    assert dst.read_bytes() == b"v2"
    assert os.listdir(dst.parent) == ["tool"]

    # An empty file, and a missing one (which leaves nothing locally).
    client.files.write(f"{base}/empty", b"")
    client.files.download(f"{base}/empty", tmp_path / "empty")
    assert (tmp_path / "empty").read_bytes() == b""
    with pytest.raises(tether.FileNotFound):
        client.files.download(f"{base}/nope", tmp_path / "nope" / "x")
    assert not (tmp_path / "nope").exists()
    with pytest.raises(FileNotFoundError):
        client.files.upload(tmp_path / "no-such-file", f"{base}/x")


def test_upload_and_download_a_tree(client, daemon, base, tmp_path):
    src = tmp_path / "src"
    want = make_tree(src)
    up = Calls()
    client.files.upload(str(src), f"{base}/tree", progress=up)
    assert snapshot(local(daemon, base, "tree")) == want
    up.check(up.calls[-1][0], None)
    assert up.calls[-1][0] > 5 * MiB  # the archive's bytes

    down = Calls()
    dst = tmp_path / "out" / "missing" / "copy"
    client.files.download(f"{base}/tree", dst, progress=down)
    assert snapshot(dst) == want
    down.check(down.calls[-1][0], None)

    # Uploading into an existing directory adds and replaces, keeping the rest.
    more = tmp_path / "more"
    (more / "a").mkdir(parents=True)
    (more / "a" / "top.txt").write_bytes(b"new top\n")
    (more / "added.txt").write_bytes(b"added\n")
    client.files.upload(more, f"{base}/tree")
    got = snapshot(local(daemon, base, "tree"))
    assert got["added.txt"][2] == sha(b"added\n")
    assert got["a/top.txt"][2] == sha(b"new top\n")
    assert got["big.bin"] == want["big.bin"]

    # Downloading over an existing copy updates it.
    client.files.download(f"{base}/tree", dst)
    assert snapshot(dst) == got


def test_a_local_failure_mid_tree_upload_raises_it(client, base, tmp_path, monkeypatch):
    make_tree(tmp_path / "src")
    add = _files._add_entry

    def failing(tar, name, full, st):
        if name == "private/key":
            raise PermissionError(13, "Permission denied", full)
        add(tar, name, full, st)

    monkeypatch.setattr(_files, "_add_entry", failing)
    with pytest.raises(PermissionError) as e:
        client.files.upload(tmp_path / "src", f"{base}/tree")
    assert e.value.filename == str(tmp_path / "src" / "private" / "key")
    assert not isinstance(e.value, tether.TetherError)
    # What came after the failing entry was never sent.
    assert not client.files.exists(f"{base}/tree/run.sh")


def test_a_progress_callback_that_raises_stops_the_transfer(client, base, tmp_path):
    client.files.write(f"{base}/big", os.urandom(5 * MiB))

    def stop(done, total):
        raise KeyError("enough")

    with pytest.raises(KeyError, match="enough"):
        client.files.download(f"{base}/big", tmp_path / "big", progress=stop)
    # Nothing is left behind, not even the temporary file.
    assert os.listdir(tmp_path) == []
    with pytest.raises(KeyError, match="enough"):
        client.files.download(base, tmp_path / "tree", progress=stop)
    # The same client goes on working.
    client.files.download(f"{base}/big", tmp_path / "big")
    assert os.path.getsize(tmp_path / "big") == 5 * MiB


def test_download_of_a_path_without_a_last_name(client, daemon, base, tmp_path):
    # `tree/a/..` has no last name (its stat has an empty name) but is a
    # directory: its archive's names have no top component to strip.
    make_tree(tmp_path / "src")
    client.files.upload(tmp_path / "src", f"{base}/tree")
    client.files.download(f"{base}/tree/a/..", tmp_path / "copy")
    assert snapshot(tmp_path / "copy") == snapshot(tmp_path / "src")
    # A trailing slash or `/.` names the same directory.
    client.files.download(f"{base}/tree/a/", tmp_path / "a1")
    client.files.download(f"{base}/tree/a/.", tmp_path / "a2")
    assert snapshot(tmp_path / "a1") == snapshot(tmp_path / "a2") == snapshot(tmp_path / "src" / "a")


def test_progress_of_reads_and_writes_counts_up_to_the_size(client, base):
    data = os.urandom(3 * MiB)
    w = Calls()
    client.files.write(f"{base}/p", data, progress=w)
    w.check(len(data), len(data))
    assert len(w.calls) >= 2
    r = Calls()
    assert client.files.read(f"{base}/p", progress=r) == data
    r.check(len(data), len(data))
    # Nothing to move: one call, at zero.
    e = Calls()
    client.files.write(f"{base}/e", b"", progress=e)
    assert e.calls == [(0, 0)]


# Safe unpacking.


def archive(*entries):
    """A tar archive in memory: ("file", name, data), ("dir", name),
    ("sym", name, target), ("hard", name, target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(rest[0])
                tar.addfile(info, io.BytesIO(rest[0]))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
            if kind == "dir":
                info.mode = 0o755
            else:
                info.linkname = rest[0]
            tar.addfile(info)
    buf.seek(0)
    return buf


@pytest.fixture(params=[True, False], ids=["data-filter", "own-checks"])
def unpacker(request, monkeypatch):
    """Both ways of checking entries: tarfile's data filter, and the checks
    used on Pythons without it."""
    monkeypatch.setattr(_files, "_HAS_DATA_FILTER", request.param)
    return _files._extract


def test_unpacking_strips_the_top_name_and_keeps_links_inside(unpacker, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    unpacker(
        archive(
            ("dir", "top"),
            ("file", "top/a.txt", b"a"),
            ("dir", "top/d"),
            ("sym", "top/d/l", "../a.txt"),
            ("sym", "top/self", "."),
        ),
        str(dest),
        "top",
    )
    assert (dest / "a.txt").read_bytes() == b"a"
    assert os.readlink(dest / "d" / "l") == "../a.txt"
    assert (dest / "d" / "l").read_bytes() == b"a"
    assert not (dest / "top").exists()


@pytest.mark.parametrize(
    "entries",
    [
        [("file", "top/../evil", b"x")],
        [("file", "/top/evil", b"x")],
        [("file", "/evil", b"x")],
        [("file", "elsewhere/evil", b"x")],
        [("sym", "top/abs", "/etc")],
        [("sym", "top/up", "../../evil")],
        # Each link stays inside on its own; through the first, the second
        # leads out.
        [("sym", "top/here", "."), ("sym", "top/here/up", "..")],
        # A link to somewhere outside, then a file written through it.
        [("sym", "top/out", "/tmp"), ("file", "top/out/evil", b"x")],
        [("file", "top/a", b"a"), ("hard", "top/h", "top/a")],
    ],
    ids=[
        "dotdot",
        "absolute-top",
        "absolute",
        "not-under-top",
        "abs-link",
        "link-out",
        "link-chain",
        "through-link",
        "hard-link",
    ],
)
def test_unpacking_refuses_entries_that_would_land_outside(unpacker, tmp_path, entries):
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises((_files._UnsafeEntry, tarfile.TarError)):
        unpacker(archive(("dir", "top"), *entries), str(dest), "top")
    assert not (tmp_path / "deep" / "evil").exists()
    assert not (tmp_path / "evil").exists()
    assert not os.path.exists("/evil")
    assert not os.path.exists("/tmp/evil")


# Confinement.


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_confined_daemon_refuses_paths_outside_its_root(kind, portal, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(str(tmp_path), root / "escape")
    os.symlink("../secret.txt", root / "escape-rel")
    (root / "sub").mkdir()
    local_file = tmp_path / "local.txt"
    local_file.write_text("local")
    local_tree = tmp_path / "tree"
    (local_tree / "d").mkdir(parents=True)
    (local_tree / "d" / "f").write_text("f")
    with Daemon("--files-root", str(root)) as d:
        c = make_client(kind, d.url, d.token, portal)
        try:
            c.files.write("inside.txt", b"ok")
            assert (root / "inside.txt").read_bytes() == b"ok"
            assert c.files.read(str(root / "inside.txt")) == b"ok"
            assert {e.name for e in c.files.list()} == {"escape", "escape-rel", "inside.txt", "sub"}

            outside = [
                "../secret.txt",
                "sub/../../secret.txt",
                str(tmp_path / "secret.txt"),
                "/etc/hostname",
                "escape/secret.txt",
                "escape-rel",
            ]
            for bad in outside:
                with pytest.raises(tether.OutsideRoot) as e:
                    c.files.read(bad)
                assert isinstance(e.value, PermissionError)
                assert isinstance(e.value, tether.FilePermissionError)
                assert (e.value.kind, e.value.path, e.value.status) == ("outside_root", bad, 403)
                with pytest.raises(tether.OutsideRoot):
                    list(c.files.stream(bad))
                with pytest.raises(tether.OutsideRoot):
                    c.files.download(bad, tmp_path / "got")
            for call in [
                lambda: c.files.stat("../secret.txt"),
                lambda: c.files.list(".."),
                lambda: c.files.list("/"),
                lambda: c.files.exists("../secret.txt"),
                lambda: c.files.write("../written", b"x"),
                lambda: c.files.write("../written", b"x" * (4 * MiB)),
                lambda: c.files.write("escape/written", b"x"),
                lambda: c.files.mkdir("../made"),
                lambda: c.files.remove("../secret.txt"),
                lambda: c.files.rename("inside.txt", "../moved"),
                lambda: c.files.rename("../secret.txt", "stolen"),
                lambda: c.files.upload(local_file, "../uploaded"),
                lambda: c.files.upload(local_tree, "../uploaded-tree"),
                lambda: c.files.upload(local_tree, "escape/uploaded-tree"),
                lambda: c.files.download("..", tmp_path / "got"),
                lambda: c.files.download("escape", tmp_path / "got"),
            ]:
                with pytest.raises(tether.OutsideRoot):
                    call()
            # Nothing got out.
            assert sorted(os.listdir(tmp_path)) == ["local.txt", "root", "secret.txt", "tree"]
            assert (tmp_path / "secret.txt").read_text() == "secret"
        finally:
            c.close()


def test_the_root_exists_by_any_of_its_names(client):
    for path in (".", "./", ""):
        assert client.files.exists(path), path
        assert client.files.stat(path).is_dir, path
