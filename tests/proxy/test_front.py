"""The Python SDK and a browser-like client through nginx and Caddy (each
test runs with both): exec, a streaming run, attaches cut between the
client and the proxy and between the proxy and the daemon and resumed,
a PTY, uploads and downloads, the web terminal page under a prefix and
its WebSocket's Origin check."""
import hashlib
import json
import os
import threading
import time

import httpx
import pytest
import tether
import websockets.sync.client as ws_client
from conftest import CountingProxy, CuttableProxy
from websockets.exceptions import InvalidStatus

#: Every wait's bound, seconds.
WAIT = 20


def client(url, daemon, **kw):
    return tether.Client(url, token=daemon.token, **kw)


def lines(first, last):
    return b"".join(b"%d\n" % i for i in range(first, last + 1))


def test_exec_at_the_root_and_under_a_prefix(front, daemons):
    a = daemons["a"]
    for url in (front.url, front.url + "/s/a", front.url + "/s/a/"):
        with client(url, a) as c:
            r = c.exec("echo out; echo err >&2; exit 3")
            assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n"), url
            r = c.exec(["sh", "-c", 'printf "%s" "$TETHER_COMMAND_ID"'])
            assert r.stdout.decode() == r.command_id, url


def test_a_streaming_run_delivers_output_while_the_command_runs(front, daemons):
    # The command waits for stdin after "ready": only a proxy that passes
    # output on as it comes lets the client see it and answer.
    with client(front.url + "/s/a", daemons["a"]) as c:
        h = c.run("echo ready; read x; echo got $x", wait=False)
        seen = b""
        for ev in h:
            if isinstance(ev, tether.OutputEvent):
                seen += ev.data
                if seen == b"ready\n":
                    break
        assert seen == b"ready\n"
        h.write_stdin("go\n")
        r = h.wait(timeout=WAIT)
        assert (r.exit_code, r.stdout) == (0, b"ready\ngot go\n")


def _attach_across_a_cut(url, daemon, cut, release_dir):
    """A detached command writes lines 1..20000, waits on a FIFO, then
    writes 20001..60000; a client attached through `url` reads the first
    part, `cut()` drops its connection, the FIFO lets the command go on,
    and the client must deliver every byte once, in order, over a new
    connection."""
    fifo = os.path.join(release_dir, "go-%d" % time.monotonic_ns())
    os.mkfifo(fifo)
    cmd = "seq 1 20000; read x < %s; seq 20001 60000" % fifo
    with client(url, daemon) as c:
        job = c.exec_detached(cmd)
        h = c.attach(job.command_id)
        got = bytearray()
        first = lines(1, 20000)
        for ev in h:
            assert isinstance(ev, tether.OutputEvent), ev
            got += ev.data
            if len(got) >= len(first):
                break
        assert bytes(got) == first
        assert c.reconnects == 0
        cut()
        with open(fifo, "w") as f:
            f.write("go\n")
        for ev in h:
            assert isinstance(ev, tether.OutputEvent), ev
            assert ev.offset == len(got), (ev.offset, len(got))
            got += ev.data
        r = h.wait(timeout=WAIT)
        assert r.exit_code == 0
        assert bytes(got) == lines(1, 60000)
        assert c.reconnects >= 1
    os.unlink(fifo)


def test_an_attach_resumes_after_a_cut_between_client_and_proxy(front, daemons):
    a = daemons["a"]
    cutter = CuttableProxy(front.url)
    try:
        _attach_across_a_cut(cutter.url + "/s/a", a, cutter.reset_all, a.root)
    finally:
        cutter.close()


def test_an_attach_resumes_after_a_cut_between_proxy_and_daemon(front, daemons, start_front):
    # proxy -> cutting proxy -> daemon: the proxy sees its upstream go and
    # must drop the client's connection, and take the next one.
    a = daemons["a"]
    cutter = CuttableProxy(a.url)
    try:
        own = start_front(front.kind, a.url, cutter.url, daemons["b"].url)
        _attach_across_a_cut(own.url + "/s/a", a, cutter.reset_all, a.root)
    finally:
        cutter.close()


def test_a_pty_echoes_and_resizes(front, daemons):
    with client(front.url + "/s/a", daemons["a"]) as c:
        t = c.pty("bash --norc --noprofile", size=(24, 80))

        def read_until(marker):
            buf = b""
            for ev in t:
                if isinstance(ev, tether.OutputEvent):
                    buf += ev.data
                    if marker in buf:
                        return buf
            raise AssertionError("the terminal ended before %r: %r" % (marker, buf))

        t.write("echo hi-$((40+2))\n")
        out = read_until(b"hi-42\r\n")
        assert b"echo hi-$((40+2))" in out  # the terminal's echo of the input
        t.resize(30, 100)
        for ev in t:
            if isinstance(ev, tether.ResizedEvent):
                assert (ev.size.rows, ev.size.cols) == (30, 100)
                break
        t.write("stty size\n")
        read_until(b"30 100\r\n")
        assert t.screen_size() == (30, 100)
        t.write("exit 7\n")
        assert t.wait(timeout=WAIT).exit_code == 7


def test_a_64_mib_upload_and_download_are_byte_exact(front, daemons):
    a, b = daemons["a"], daemons["b"]
    data = os.urandom(64 << 20)
    digest = hashlib.sha256(data).hexdigest()
    name = "up-%s-%d.bin" % (front.kind, time.monotonic_ns())
    with client(front.url + "/s/a", a) as c:
        # A relative path: the daemon's own working directory (its root
        # here), so where the file lands shows which daemon was reached.
        c.files.write(name, data)
        with open(os.path.join(a.root, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
        back = c.files.read(name)
        assert len(back) == len(data)
        assert hashlib.sha256(back).hexdigest() == digest
    assert not os.path.exists(os.path.join(b.root, name))
    with client(front.url + "/s/b", b) as c, pytest.raises(tether.FileNotFound):
        c.files.read(name)
    os.unlink(os.path.join(a.root, name))


def test_an_upload_reaches_the_daemon_while_it_is_sent(front, daemons, start_front):
    # proxy -> counting proxy -> daemon. The body's first 4 MiB must reach
    # the daemon while the client still holds the rest: a proxy that
    # spools request bodies (nginx's proxy_request_buffering on) would
    # send nothing before the last byte.
    a = daemons["a"]
    counter = CountingProxy(a.url)
    part = 4 << 20
    arrived = threading.Event()

    def body():
        yield b"x" * part
        if counter.wait_up(part, WAIT):
            arrived.set()
        yield b"y" * part

    try:
        own = start_front(front.kind, a.url, counter.url, daemons["b"].url)
        path = os.path.join(a.root, "streamed-%s.bin" % front.kind)
        r = httpx.put(
            own.url + "/s/a/v1/files", params={"path": path}, content=body(),
            headers={"Authorization": "Bearer " + a.token}, timeout=WAIT,
        )
        assert r.status_code in (200, 201, 204), (r.status_code, r.text)
        assert arrived.is_set(), "the proxy held the first %d bytes until the body ended" % part
        assert os.path.getsize(path) == 2 * part
        os.unlink(path)
    finally:
        counter.close()


def test_the_terminal_page_loads_under_a_prefix(front, daemons):
    page = httpx.get(front.url + "/s/a/", timeout=WAIT)
    assert page.status_code == 200
    assert "<title>tether</title>" in page.text
    # Relative URLs only, so the page works under any prefix.
    assert 'src="app.js"' in page.text and 'href="app.css"' in page.text
    js = httpx.get(front.url + "/s/a/app.js", timeout=WAIT)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for absolute in ("'/v1/", '"/v1/', "`/v1/"):
        assert absolute not in js.text, absolute
    # Without the slash, the proxy redirects to the page's real place.
    r = httpx.get(front.url + "/s/a", timeout=WAIT)
    assert r.status_code in (301, 302, 307, 308)
    assert r.headers["location"].endswith("/s/a/")


def _browser_ws(url, token, origin):
    return ws_client.connect(
        url, origin=origin, subprotocols=["tether.v1.json", "tether.token." + token], open_timeout=WAIT
    )


def test_a_browser_websocket_under_a_prefix_checks_its_origin(front, daemons):
    a = daemons["a"]
    # What the page opens: `v1/ws` relative to /s/a/, from the proxy's
    # origin. The proxy passes the client's Host (port included), so the
    # daemon sees a same-origin request.
    ws_url = front.url.replace("http://", "ws://") + "/s/a/v1/ws"
    with _browser_ws(ws_url, a.token, front.url) as ws:
        assert ws.subprotocol == "tether.v1.json"
        hello = json.loads(ws.recv(timeout=WAIT))
        assert hello["type"] == "hello", hello
    with pytest.raises(InvalidStatus) as e:
        _browser_ws(ws_url, a.token, "http://evil.example")
    assert e.value.response.status_code == 403
    # A DNS name the daemon was not given (--allow-host) is refused too:
    # the proxy passed the Host on rather than putting its own.
    r = httpx.get(
        front.url + "/s/a/v1/commands", headers={"Host": "sandboxes.example", "Authorization": "Bearer " + a.token},
        timeout=WAIT,
    )
    assert r.status_code == 403, r.text
    assert "allow-host" in r.json()["message"]
