"""The E2B SDK's `files` (e2b 2.63.0) against tether's E2B dialect: the
Filesystem service (stat, list, make_dir, rename, remove) and the /files
routes (read, write, write_files), confined like the native file routes."""
import hashlib
import io
import os
import secrets
import tempfile

import pytest

from conftest import Daemon, connect


@pytest.fixture
def base(sbx):
    """A fresh directory for the test (relative to the files root)."""
    return "t-" + secrets.token_hex(4)


def test_write_read_roundtrip_text_and_bytes(sbx, base):
    info = sbx.files.write(base + "/a.txt", "héllo")
    assert info.name == "a.txt" and info.path.endswith(base + "/a.txt")
    assert sbx.files.read(base + "/a.txt") == "héllo"
    sbx.files.write(base + "/b.bin", b"\x00\xff\x01")
    assert bytes(sbx.files.read(base + "/b.bin", format="bytes")) == b"\x00\xff\x01"


def test_several_files_and_10_mb_exact(sbx, base):
    infos = sbx.files.write_files([{"path": base + "/1.txt", "data": "one"},
                                   {"path": base + "/2.txt", "data": "two"}])
    assert [i.name for i in infos] == ["1.txt", "2.txt"]
    data = os.urandom(10 << 20)
    sbx.files.write(base + "/big.bin", io.BytesIO(data))
    got = bytes(sbx.files.read(base + "/big.bin", format="bytes"))
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_stat_list_make_dir_rename_remove(sbx, base):
    from e2b import FileType

    sbx.files.write(base + "/d/x.txt", "x")
    assert sbx.files.exists(base + "/d/x.txt") and not sbx.files.exists(base + "/nope")
    info = sbx.files.get_info(base + "/d/x.txt")
    assert (info.type, info.size, info.permissions) == (FileType.FILE, 1, "-rw-r--r--")
    assert sbx.files.make_dir(base + "/e/f") is True
    assert sbx.files.make_dir(base + "/e/f") is False, "it exists"
    names = sorted(e.name for e in sbx.files.list(base))
    assert names == ["d", "e"]
    deep = [e.path.split(base + "/", 1)[1] for e in sbx.files.list(base, depth=2)]
    assert sorted(deep) == ["d", "d/x.txt", "e", "e/f"]
    moved = sbx.files.rename(base + "/d/x.txt", base + "/g/y.txt")
    assert moved.name == "y.txt" and sbx.files.read(base + "/g/y.txt") == "x"
    sbx.files.remove(base)
    assert not sbx.files.exists(base)
    sbx.files.remove(base)  # a missing path is fine, as on envd


def test_missing_files_are_not_found(sbx, base):
    from e2b import FileNotFoundException

    with pytest.raises(FileNotFoundException):
        sbx.files.read(base + "/missing.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info(base + "/missing.txt")


def test_paths_outside_the_files_root_are_refused():
    from e2b import SandboxException

    top = tempfile.mkdtemp(prefix="tether-e2b-confined-")
    root = os.path.join(top, "root")
    os.makedirs(root)
    with open(os.path.join(top, "secret.txt"), "w") as f:
        f.write("secret")
    with Daemon("--files-root", root, cwd=top) as d:
        sbx = connect(d)
        sbx.files.write("inside.txt", "ok")
        assert os.path.exists(os.path.join(root, "inside.txt"))
        with pytest.raises(SandboxException):
            sbx.files.read("../secret.txt")
        with pytest.raises(SandboxException):
            sbx.files.get_info(os.path.join(top, "secret.txt"))
        with pytest.raises(SandboxException):
            sbx.files.write(os.path.join(top, "planted.txt"), "no")
        assert not os.path.exists(os.path.join(top, "planted.txt"))


def test_the_async_sdk_writes_and_reads(daemon, run_async, base):
    from e2b import AsyncSandbox

    from conftest import url

    async def main():
        u = url(daemon)
        sbx = await AsyncSandbox.connect("local", api_key=daemon.token, api_url=u, sandbox_url=u)
        await sbx.files.write(base + "/async.txt", "from async")
        assert await sbx.files.read(base + "/async.txt") == "from async"
        assert [e.name for e in await sbx.files.list(base)] == ["async.txt"]

    run_async(main())


def _poll(handle, want, within=10):
    """The sync watcher's events until `want` (a set of (name, type)) is
    among them."""
    import time

    seen, deadline = [], time.monotonic() + within
    while not want <= {(e.name, e.type.value) for e in seen}:
        assert time.monotonic() < deadline, seen
        seen += handle.get_new_events()
        time.sleep(0.05)
    return seen


def test_a_sync_watcher_sees_creates_removes_and_new_subdirectories(sbx, base):
    sbx.files.make_dir(base)
    h = sbx.files.watch_dir(base, recursive=True)
    try:
        sbx.files.write(base + "/a.txt", "1")
        sbx.files.make_dir(base + "/sub")
        sbx.files.write(base + "/sub/b.txt", "2")
        sbx.files.remove(base + "/a.txt")
        seen = _poll(h, {("a.txt", "create"), ("sub", "create"), ("sub/b.txt", "create"), ("a.txt", "remove")})
        # tether's atomic writes (an unnamed inode, renamed in) never show.
        assert all(not e.name.startswith(("#", ".")) for e in seen), seen
    finally:
        h.stop()
    from e2b import SandboxException

    with pytest.raises(SandboxException):
        h.get_new_events()


def test_the_async_watch_streams_events(daemon, run_async, base):
    import asyncio

    from e2b import AsyncSandbox

    from conftest import url

    async def main():
        u = url(daemon)
        sbx = await AsyncSandbox.connect("local", api_key=daemon.token, api_url=u, sandbox_url=u)
        await sbx.files.make_dir(base)
        seen = []
        w = await sbx.files.watch_dir(base, lambda e: seen.append((e.name, e.type.value)), timeout=20)
        await sbx.files.write(base + "/c.txt", "3")
        for _ in range(200):
            if ("c.txt", "create") in seen:
                break
            await asyncio.sleep(0.05)
        await w.stop()
        assert ("c.txt", "create") in seen, seen

    run_async(main())
