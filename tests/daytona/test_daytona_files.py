"""Files under the real `daytona` SDK, sync and async: uploads and
downloads (one, several, 10 MB), list, info, folders, delete, move, find,
search, replace, permissions, and the typed errors (not found, outside
--files-root, a bad path)."""
import hashlib
import io
import os
import secrets
import stat

import pytest
from daytona import (
    DaytonaConflictError, DaytonaError, DaytonaFileAccessDeniedError, DaytonaFileNotFoundError,
    DaytonaInvalidFilePathError, FileDownloadRequest, FileUpload,
)

from conftest import close_box, open_box


@pytest.fixture
def base(box, daemon):
    """A directory of the test's own, relative to the files root (the
    daemon's working directory): (relative path, absolute path)."""
    rel = "f-%s-%s" % (box.kind, secrets.token_hex(4))
    return rel, os.path.join(daemon.root, rel)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_upload_and_download_one_file(box, base, tmp_path):
    fs, (rel, path) = box.sb.fs, base
    box(fs.upload_file("héllo\n".encode(), rel + "/deep/a.txt"))  # parents are made
    assert read(path + "/deep/a.txt") == "héllo\n".encode()
    assert box(fs.download_file(rel + "/deep/a.txt")) == "héllo\n".encode()
    # Overwrite, from a local file, to an absolute path; and to a local file.
    local = tmp_path / "src.bin"
    local.write_bytes(b"\x00\x01binary\xff")
    box(fs.upload_file(str(local), path + "/deep/a.txt"))
    assert read(path + "/deep/a.txt") == b"\x00\x01binary\xff"
    box(fs.download_file(rel + "/deep/a.txt", str(tmp_path / "dst.bin")))
    assert (tmp_path / "dst.bin").read_bytes() == b"\x00\x01binary\xff"


def test_a_10_mb_file_roundtrips_byte_exact(box, base):
    fs, (rel, path) = box.sb.fs, base
    data = os.urandom(10 << 20)
    want = hashlib.sha256(data).hexdigest()
    box(fs.upload_file(data, rel + "/big.bin"), within=60)
    assert hashlib.sha256(read(path + "/big.bin")).hexdigest() == want
    got = box(fs.download_file(rel + "/big.bin"), within=60)
    assert (len(got), hashlib.sha256(got).hexdigest()) == (len(data), want)


def test_streamed_upload_and_download(box, base):
    # upload_file_stream sends a chunked body (from a fresh httpx client, or
    # httpx.AsyncClient); download_file_stream reads the multipart answer
    # as it comes, its progress fed by the part's Content-Length.
    fs, (rel, path) = box.sb.fs, base
    data = os.urandom(3 << 20)
    sent, received = [], []
    box(fs.upload_file_stream(io.BytesIO(data), rel + "/stream.bin", on_progress=sent.append), within=60)
    assert read(path + "/stream.bin") == data
    assert sent and sent[-1].bytes_sent == len(data)
    # The sync SDK returns a generator, the async one an async iterator.
    chunks = box(box(fs.download_file_stream(rel + "/stream.bin", on_progress=received.append)), within=60)
    assert b"".join(chunks) == data
    assert (received[-1].bytes_received, received[-1].total_bytes) == (len(data), len(data))


def test_odd_names_and_an_empty_file(box, base):
    # Each part names its path exactly (filename*= for non-ASCII, quotes
    # and backslashes: T13), whichever parser reads it.
    fs, (rel, path) = box.sb.fs, base
    for name in ("d\u00e9j\u00e0 \u00fc.txt", 'q"uo\\te.txt', "sp ace;semi=colon.txt"):
        box(fs.upload_file(name.encode(), rel + "/" + name))
        assert read(os.path.join(path, name)) == name.encode()
        assert box(fs.download_file(rel + "/" + name)) == name.encode()
        assert b"".join(box(box(fs.download_file_stream(rel + "/" + name)))) == name.encode()
        [r] = box(fs.download_files([FileDownloadRequest(source=rel + "/" + name)]))
        assert (r.source, r.result, r.error) == (rel + "/" + name, name.encode(), None)
    box(fs.upload_file(b"", rel + "/empty"))
    assert box(fs.download_file(rel + "/empty")) == b""
    # The stream variant counts data only from a non-empty chunk: an empty
    # file is "No file data received" whatever the daemon sends (T13).
    with pytest.raises(DaytonaError, match="No file data received"):
        box(box(fs.download_file_stream(rel + "/empty")))


def test_several_files_up_and_down(box, base):
    fs, (rel, path) = box.sb.fs, base
    files = {rel + "/one.txt": b"one\n", rel + "/sub/d\u00e9j\u00e0 vu.txt": "caf\u00e9\n".encode(),
             rel + "/empty": b"", rel + "/rand.bin": os.urandom(100_000)}
    box(fs.upload_files([FileUpload(source=data, destination=dest) for dest, data in files.items()]))
    for dest, data in files.items():
        assert read(os.path.join(path, os.path.relpath(dest, rel))) == data, dest
    got = box(fs.download_files([FileDownloadRequest(source=src) for src in [*files, rel + "/missing"]]))
    by_source = {r.source: r for r in got}
    assert set(by_source) == {*files, rel + "/missing"}
    for src, data in files.items():
        assert (by_source[src].error, by_source[src].result) == (None, data), src
    missing = by_source[rel + "/missing"]
    assert missing.result is None and missing.error
    assert (missing.error_details.status_code, missing.error_details.code) == (404, "FILE_NOT_FOUND")


def test_list_info_folder_move_and_delete(box, base):
    fs, (rel, path) = box.sb.fs, base
    box(fs.create_folder(rel + "/dir/inner", "750"))
    box(fs.upload_file(b"12345", rel + "/dir/f.txt"))
    info = box(fs.get_file_info(rel + "/dir"))
    assert (info.name, info.is_dir) == ("dir", True)
    inner = box(fs.get_file_info(rel + "/dir/inner"))
    assert (inner.is_dir, inner.permissions, inner.mode) == (True, "0750", "drwxr-x---")
    assert stat.S_IMODE(os.stat(path + "/dir/inner").st_mode) == 0o750
    f = box(fs.get_file_info(rel + "/dir/f.txt"))
    assert (f.name, f.is_dir, f.size, f.mode) == ("f.txt", False, 5, "-rw-r--r--")
    assert f.owner and f.group and f.mod_time
    listing = box(fs.list_files(rel + "/dir"))
    assert sorted((e.name, e.is_dir) for e in listing) == [("f.txt", False), ("inner", True)]

    box(fs.move_files(rel + "/dir/f.txt", rel + "/dir/inner/g.txt"))
    assert not os.path.exists(path + "/dir/f.txt") and read(path + "/dir/inner/g.txt") == b"12345"
    with pytest.raises(DaytonaConflictError):
        box(fs.delete_file(rel + "/dir"))  # not empty, not recursive
    box(fs.delete_file(rel + "/dir/inner/g.txt"))
    assert not os.path.exists(path + "/dir/inner/g.txt")
    box(fs.upload_file(b"x", rel + "/dir/inner/h.txt"))
    box(fs.delete_file(rel + "/dir", recursive=True))
    assert not os.path.exists(path + "/dir")


def test_find_search_and_replace(box, base):
    fs, (rel, path) = box.sb.fs, base
    box(fs.upload_files([
        FileUpload(source=b"alpha\nthe needle here\nomega\n", destination=rel + "/a.py"),
        FileUpload(source=b"needle first\n", destination=rel + "/sub/b.py"),
        FileUpload(source=b"no match\n", destination=rel + "/sub/c.txt"),
    ]))
    matches = box(fs.find_files(rel, "needle"))
    assert sorted((os.path.basename(m.file), m.line, m.content) for m in matches) == \
        [("a.py", 2, "the needle here"), ("b.py", 1, "needle first")]
    found = box(fs.search_files(rel, "*.py"))
    assert sorted(os.path.basename(f) for f in found.files) == ["a.py", "b.py"]

    results = box(fs.replace_in_files([rel + "/a.py", rel + "/sub/b.py", rel + "/nothere.py"], "needle", "pin"))
    by_file = {os.path.basename(r.file): r for r in results}
    assert by_file["a.py"].success and by_file["b.py"].success
    assert not by_file["nothere.py"].success and by_file["nothere.py"].error
    assert read(path + "/a.py") == b"alpha\nthe pin here\nomega\n"
    assert read(path + "/sub/b.py") == b"pin first\n"


def test_set_file_permissions(box, base):
    fs, (rel, path) = box.sb.fs, base
    box(fs.upload_file(b"#!/bin/sh\n", rel + "/run.sh"))
    box(fs.set_file_permissions(rel + "/run.sh", mode="700"))
    assert stat.S_IMODE(os.stat(path + "/run.sh").st_mode) == 0o700
    assert box(fs.get_file_info(rel + "/run.sh")).permissions == "0700"


def test_file_errors_are_typed(box, base):
    fs, (rel, _) = box.sb.fs, base
    for call in (lambda: fs.get_file_info(rel + "/missing"), lambda: fs.list_files(rel + "/missing"),
                 lambda: fs.download_file(rel + "/missing"), lambda: fs.delete_file(rel + "/missing")):
        with pytest.raises(DaytonaFileNotFoundError):
            box(call())
    box(fs.upload_file(b"x", rel + "/file"))
    for call in (lambda: fs.get_file_info(rel + "/nul\x00byte"), lambda: fs.list_files(rel + "/file")):
        with pytest.raises(DaytonaInvalidFilePathError):
            box(call())


def test_paths_outside_the_files_root_are_refused(confined, loop, kind):
    b = open_box(kind, confined.url, confined.token, loop)
    try:
        fs = b.sb.fs
        assert b(b.sb.get_work_dir()) == confined.files_root
        assert b(fs.download_file("inside.txt")) == b"inside\n"
        secret = os.path.join(confined.outside, "secret.txt")
        for call in (lambda: fs.get_file_info(secret), lambda: fs.get_file_info("../outside/secret.txt"),
                     lambda: fs.download_file(secret), lambda: fs.list_files(confined.outside)):
            with pytest.raises(DaytonaFileAccessDeniedError):
                b(call())
        # An upload's error is a plain DaytonaError with its status (§6).
        with pytest.raises(DaytonaError) as e:
            b(fs.upload_file(b"x", os.path.join(confined.outside, "new.txt")))
        assert e.value.status_code == 403
        assert not os.path.exists(os.path.join(confined.outside, "new.txt"))
    finally:
        close_box(b)
