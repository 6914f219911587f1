"""Bounds and the files root: the tag body is capped, spawns and uploads share the daemon's body budget with the
one-shot routes (refused in the vendor's shape), runs start in --files-root, and a confined listing takes nothing
from outside the file layer."""
import json
import os
import socket
import tempfile

import httpx
from conftest import Daemon, config, url

from contree_sdk import ContreeSync


def auth(d):
    return {"Authorization": f"Bearer {d.token}"}


def test_a_big_tag_body_is_refused_unread(daemon, client):
    host = client.images.use("local", strict=True).uuid
    body = b'{"tag": "local", "pad": "' + b"x" * (1 << 20) + b'"}'
    resp = httpx.patch(url(daemon) + f"/v1/images/{host}/tag", headers=auth(daemon), content=body)
    assert resp.status_code == 413, resp.text
    assert resp.json() == {"status": 413, "error": resp.json()["error"]}
    # A small one still works.
    ok = httpx.patch(url(daemon) + f"/v1/images/{host}/tag", headers=auth(daemon), json={"tag": "local"})
    assert ok.status_code == 200 and ok.json()["tag"] == "local", ok.text


def test_spawns_and_uploads_share_the_daemons_body_budget():
    budget = 1 << 20
    with Daemon("--max-body-memory", str(budget)) as d:
        spawn = json.dumps({"command": "true", "image": "tag:local",
                            "stdin": {"value": "x" * (600 << 10), "encoding": "ascii"}}).encode()
        # Larger than the whole budget: never fits, 413.
        resp = httpx.post(url(d) + "/v1/files", headers=auth(d), content=b"y" * (budget + 1))
        assert resp.status_code == 413 and resp.json()["status"] == 413, resp.text
        # A one-shot request that holds 900 KiB of the budget (its body never finishes arriving) ...
        host, port = d.url.removeprefix("http://").split(":")
        held = socket.create_connection((host, int(port)))
        try:
            held.settimeout(20)
            held.sendall(f"POST /v1/exec HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {d.token}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {900 << 10}\r\n"
                         "Expect: 100-continue\r\n\r\n".encode())
            # The handler asks for the body (100 Continue) once the budget layer has charged it.
            assert held.recv(64).startswith(b"HTTP/1.1 100"), "no 100 Continue"
            held.sendall(b"{")
            # ... leaves too little for a spawn or an upload: 429 in the vendor's shape, Retry-After.
            for path, body in [("/v1/instances", spawn), ("/v1/files", b"z" * (600 << 10))]:
                resp = httpx.post(url(d) + path, headers=auth(d), content=body, timeout=20)
                assert resp.status_code == 429, (path, resp.text)
                assert resp.json()["status"] == 429 and "budget" in resp.json()["error"]
                assert resp.headers["retry-after"] == "1"
        finally:
            held.close()
        # Once it is gone, the same spawn runs.
        c = ContreeSync(config(d))
        r = c.images.use("local").run(shell="wc -c", stdin="x" * (600 << 10)).wait()
        assert r.stdout.strip() == str(600 << 10)


def test_runs_start_in_the_files_root():
    root = tempfile.mkdtemp(prefix="tether-contree-root-")
    os.mkdir(os.path.join(root, "sub"))
    with Daemon("--files-root", root) as d:
        img = ContreeSync(config(d)).images.use("local")
        real = os.path.realpath(root)
        assert os.path.realpath(img.run(shell="pwd").wait().stdout.strip()) == real
        assert os.path.realpath(img.run(shell="pwd", cwd="sub").wait().stdout.strip()) == os.path.join(real, "sub")
        assert img.run(shell="pwd", cwd="/").wait().stdout.strip() == "/"


def test_a_listing_takes_owners_and_links_from_the_file_layer():
    root = tempfile.mkdtemp(prefix="tether-contree-root-")
    with open(os.path.join(root, "f"), "w") as f:
        f.write("data")
    os.mkdir(os.path.join(root, "d"))
    with Daemon("--files-root", root) as d:
        host = ContreeSync(config(d)).images.use("local", strict=True).uuid
        resp = httpx.get(url(d) + f"/v1/inspect/{host}/list", params={"path": root}, headers=auth(d))
        assert resp.status_code == 200, resp.text
        entries = {e["path"]: e for e in resp.json()["files"]}
        assert set(entries) == {"f", "d"}
        assert entries["f"]["size"] == 4 and entries["f"]["is_regular"] and entries["d"]["is_dir"]
        # Owners and link counts come from the file layer's own lookup
        # (confined: never a second lookup by path).
        os.link(os.path.join(root, "f"), os.path.join(root, "f2"))
        resp = httpx.get(url(d) + f"/v1/inspect/{host}/list", params={"path": root}, headers=auth(d))
        entries = {e["path"]: e for e in resp.json()["files"]}
        assert (entries["f"]["uid"], entries["f"]["gid"]) == (os.getuid(), os.getgid()), entries["f"]
        assert entries["f"]["nlink"] == 2 and entries["f"]["owner"], entries["f"]
        os.unlink(os.path.join(root, "f2"))
    # Unconfined, the same.
    with Daemon() as d:
        host = ContreeSync(config(d)).images.use("local", strict=True).uuid
        resp = httpx.get(url(d) + f"/v1/inspect/{host}/list", params={"path": root}, headers=auth(d))
        entries = {e["path"]: e for e in resp.json()["files"]}
        assert entries["f"]["uid"] == os.getuid() and entries["f"]["nlink"] == 1
