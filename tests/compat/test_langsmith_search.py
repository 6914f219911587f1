"""`glob`, `ls` and `grep` of the real `langsmith` client against tether's
/compat/langsmith/glob and /grep (protocol/compat/langsmith.md 8.5, 8.6)."""
import datetime
import os
import json
import secrets
import urllib.error
import urllib.request

import pytest
from langsmith.sandbox import ResourceNotFoundError, SandboxOperationError

from conftest import sandbox

FILES = {
    "src/main.py": "import os\nprint('a.b*c')\n",
    "src/util.py": "def f(x):\n    return x[0]  # a.b*c\n",
    "src/pkg/__init__.py": "",
    "src/pkg/mod1.py": "x = 1\n",
    "src/pkg/mod22.py": "x = 22\n",
    "docs/readme.md": "a.b*c here\nnothing\n",
    "docs/b.md": "b\n",
    # A regex would find `a.b*c` in `aXc`; a literal search must not.
    "notes.txt": "line1\naXc\na.b*c\n",
    ".hidden": "a.b*c\n",
}


@pytest.fixture
def tree(sb, daemon):
    """A fresh tree below the daemon's root; its absolute path."""
    base = os.path.join(os.path.realpath(daemon["root"]), "search-" + secrets.token_hex(4))
    for rel, data in FILES.items():
        sb.write(base + "/" + rel, data)
    # Binary: a NUL in the first 8 KiB, and the pattern after it.
    with open(base + "/data.bin", "wb") as f:
        f.write(b"\x00\x01a.b*c\n")
    return base


def rel(base, result):
    return [m.path.removeprefix(base + "/") for m in result]


def test_glob_patterns_paths_and_metadata(sb, tree):
    r = sb.glob("**/*.py", tree)
    assert rel(tree, r) == ["src/main.py", "src/pkg/__init__.py", "src/pkg/mod1.py", "src/pkg/mod22.py",
                            "src/util.py"]
    assert not r.truncated
    for m in r:
        st = os.stat(m.path)  # absolute paths, on this machine
        assert (m.is_dir, m.size_bytes) == (False, st.st_size)
        when = datetime.datetime.fromisoformat(m.modified_at.replace("Z", "+00:00"))
        assert when.tzinfo is not None and when.utcoffset() == datetime.timedelta(0)
        assert int(when.timestamp()) == int(st.st_mtime)
    assert rel(tree, sb.glob("src/*.py", tree)) == ["src/main.py", "src/util.py"]
    assert rel(tree, sb.glob("src/pkg/mod?.py", tree)) == ["src/pkg/mod1.py"]
    assert rel(tree, sb.glob("src/[mu]*.py", tree)) == ["src/main.py", "src/util.py"]
    assert rel(tree, sb.glob("src/[!m]*.py", tree)) == ["src/util.py"]
    assert rel(tree, sb.glob("**/[a-b]*.md", tree)) == ["docs/b.md"]
    assert rel(tree, sb.glob("**/mod[0-9][0-9].py", tree)) == ["src/pkg/mod22.py"]
    # Directories match too, and `**` spans any number of segments.
    r = sb.glob("**", tree)
    dirs = [p for p, m in zip(rel(tree, r), r) if m.is_dir]
    assert dirs == ["docs", "src", "src/pkg"]
    assert len(r) == len(FILES) + 1 + len(dirs)
    # Path order: a directory's entries right after it.
    assert rel(tree, r)[:4] == [".hidden", "data.bin", "docs", "docs/b.md"]


def test_glob_limit_truncates_to_a_prefix(sb, tree):
    full = sb.glob("**", tree)
    assert not full.truncated
    r = sb.glob("**", tree, limit=3)
    assert r.truncated and [m.path for m in r] == [m.path for m in full][:3]
    r = sb.glob("**", tree, limit=len(full))
    assert not r.truncated and len(r) == len(full)
    r = sb.glob("**", tree, limit=10**30)  # clamped, not refused
    assert not r.truncated and len(r) == len(full)


def test_ls_lists_one_level(sb, tree):
    r = sb.ls(tree)
    assert rel(tree, r) == [".hidden", "data.bin", "docs", "notes.txt", "src"]
    assert [m.is_dir for m in r] == [False, False, True, False, True]
    assert rel(tree, sb.ls(tree + "/src")) == ["src/main.py", "src/pkg", "src/util.py"]
    assert [m.path for m in sb.ls(tree, limit=2)] == [m.path for m in r][:2]


def test_grep_is_literal_with_line_numbers(sb, tree):
    r = sb.grep("a.b*c", tree)
    got = [(p, m.line, m.text) for p, m in zip(rel(tree, r), r)]
    # data.bin holds the pattern too, but is binary; `aXc` is no match.
    assert got == [
        (".hidden", 1, "a.b*c"),
        ("docs/readme.md", 1, "a.b*c here"),
        ("notes.txt", 3, "a.b*c"),
        ("src/main.py", 2, "print('a.b*c')"),
        ("src/util.py", 2, "    return x[0]  # a.b*c"),
    ]
    assert not r.truncated
    assert [(m.line, m.text) for m in sb.grep("x[0]", tree)] == [(2, "    return x[0]  # a.b*c")]
    assert len(sb.grep("no such text anywhere", tree)) == 0


def test_grep_glob_filter_by_name_or_path(sb, tree):
    # A bare pattern matches the name at any depth.
    assert rel(tree, sb.grep("x", tree, glob="*.py")) == ["src/pkg/mod1.py", "src/pkg/mod22.py", "src/util.py",
                                                         "src/util.py"]
    assert rel(tree, sb.grep("x", tree, glob="mod?.py")) == ["src/pkg/mod1.py"]
    # With a `/` or `**`, the path relative to `path`.
    assert rel(tree, sb.grep("a.b*c", tree, glob="src/*.py")) == ["src/main.py", "src/util.py"]
    assert rel(tree, sb.grep("x", tree, glob="src/*.py")) == ["src/util.py", "src/util.py"]
    assert rel(tree, sb.grep("a.b*c", tree, glob="**/readme.md")) == ["docs/readme.md"]
    assert rel(tree, sb.grep("a.b*c", tree, glob="*/readme.md")) == ["docs/readme.md"]
    assert rel(tree, sb.grep("a.b*c", tree, glob="readme.md/x")) == []


def test_grep_limit_and_long_lines(sb, tree):
    full = sb.grep("a.b*c", tree)
    r = sb.grep("a.b*c", tree, limit=2)
    assert r.truncated and [(m.path, m.line) for m in r] == [(m.path, m.line) for m in full][:2]
    assert not sb.grep("a.b*c", tree, limit=len(full)).truncated
    # A line of 1 MB: found (the match is at its end), its text cut short.
    sb.write(tree + "/long.txt", "y" * 1_000_000 + "needle\n")
    [m] = sb.grep("needle", tree)
    assert m.line == 1 and 0 < len(m.text) <= 4096 and set(m.text) == {"y"}
    # CRLF: the text loses both bytes of the newline.
    sb.write(tree + "/crlf.txt", "x\r\nthe CRLF-mark\r\n")
    assert [(m.line, m.text) for m in sb.grep("CRLF-mark", tree)] == [(2, "the CRLF-mark")]


def test_errors_are_the_clients_typed_exceptions(sb, tree):
    for call in (lambda: sb.glob("*", tree + "/missing"), lambda: sb.grep("x", tree + "/missing"),
                 lambda: sb.ls(tree + "/missing")):
        with pytest.raises(ResourceNotFoundError) as e:
            call()
        assert e.value.resource_type == "file"
    # Bad input: 400 ReadError, which the client raises as a read error.
    for call in (lambda: sb.glob("*", tree + "/notes.txt"), lambda: sb.grep("x", tree + "/notes.txt"),
                 lambda: sb.glob("", tree), lambda: sb.grep("", tree), lambda: sb.glob("*", tree, limit=0),
                 lambda: sb.grep("x", tree, limit=-1), lambda: sb.grep("x", tree, glob="")):
        with pytest.raises(SandboxOperationError) as e:
            call()
        assert (e.value.error_type, e.value.operation) == ("ReadError", "read"), e.value


def post(url, body, headers):
    """(status, parsed JSON body) of a raw POST."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_malformed_requests_get_the_clients_error_shape(daemon):
    url = daemon["url"] + "/compat/langsmith/"
    headers = {"X-Api-Key": daemon["token"], "Content-Type": "application/json"}
    for route in ("glob", "grep"):
        for body in (b"{not json", b'{"path": "/"}', b'{"pattern": 3, "path": "/"}', b"[]", b"x" * 100_000):
            status, got = post(url + route, body, headers)
            assert status == 400, (route, body[:20], got)
            assert got["detail"]["error"] == "ReadError" and got["detail"]["message"]
        status, _ = post(url + route, b'{"pattern": "x", "path": "/"}', {"Content-Type": "application/json"})
        assert status == 401  # the same auth as every other route


def test_confined_root_never_reports_outside(confined):
    sb = sandbox(confined["url"], confined["token"])
    root, outside = confined["root"], confined["outside"]
    # Symlinks are entries (not directories), never followed.
    r = sb.glob("**", root)
    assert [(m.path.removeprefix(root + "/"), m.is_dir) for m in r] == [
        ("abs", False), ("dir", True), ("dir/inside.txt", False), ("dir/secret.txt", False), ("up", False)]
    assert [m.path for m in sb.glob("**", ".")] == [m.path for m in r]  # relative: from the root
    r = sb.grep("needle", root)
    assert [(m.path, m.text) for m in r] == [(root + "/dir/inside.txt", "inside needle")]
    assert [m.path for m in sb.grep("needle", "dir")] == [root + "/dir/inside.txt"]
    # A start outside, or through a symlink out of the root: refused.
    for path in (outside, root + "/../outside", "..", "up", root + "/abs", "/etc"):
        for call in (lambda: sb.glob("*", path), lambda: sb.grep("needle", path)):
            with pytest.raises(SandboxOperationError) as e:
                call()
            assert e.value.error_type == "PermissionDenied", (path, e.value)
