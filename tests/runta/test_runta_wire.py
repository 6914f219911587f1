"""The exec WebSocket driven directly (websockets, the SDK's own
dependency): refusals are `error` frames and a 1000 close, never a hang;
large stdin through the window arrives whole."""
import base64
import hashlib
import json
import os
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import Daemon, tether_cli, url


def ws(daemon, runtime="local"):
    u = url(daemon).replace("http://", "ws://") + f"/v2/runtimes/{runtime}/exec/stream"
    return connect(u, additional_headers={"Authorization": "Bearer " + daemon.token}, max_size=None,
                   open_timeout=10, close_timeout=10)


def frames_until_close(sock):
    out = []
    while True:
        try:
            out.append(json.loads(sock.recv(timeout=20)))
        except Exception as e:  # ConnectionClosed ends the stream
            return out, e


def test_first_frame_must_be_start(daemon):
    with ws(daemon) as s:
        s.send(json.dumps({"type": "stdin", "data_base64": ""}))
        frames, closed = frames_until_close(s)
    assert frames == [{"type": "error", "message": "the first frame must be start"}]
    assert closed.rcvd.code == 1000


@pytest.mark.parametrize("bad,words", [
    ("not json", "malformed frame"),
    (json.dumps({"type": "start"}), "malformed frame"),
    (json.dumps({"type": "start", "command": "", "args": []}), "command is empty"),
    (json.dumps({"type": "start", "command": "sh", "tty": True}), "tty is not supported"),
    (json.dumps({"type": "start", "command": "/no/such/program"}), "start:"),
    (json.dumps({"type": "start", "command": "true", "env": {"A=B": "1"}}), "start:"),
])
def test_bad_start_is_an_error_frame(daemon, bad, words):
    with ws(daemon) as s:
        s.send(bad)
        frames, closed = frames_until_close(s)
    assert len(frames) == 1 and frames[0]["type"] == "error" and words in frames[0]["message"], frames
    assert closed.rcvd.code == 1000


def test_bad_base64_after_start_is_an_error_frame(daemon):
    with ws(daemon) as s:
        s.send(json.dumps({"type": "start", "command": "cat"}))
        s.send(json.dumps({"type": "stdin", "data_base64": "!!"}))
        frames, _ = frames_until_close(s)
    assert frames[-1]["type"] == "error" and "base64" in frames[-1]["message"]


def test_unknown_runtime_upgrade_is_404(daemon):
    with pytest.raises(InvalidStatus) as e:
        ws(daemon, "elsewhere")
    assert e.value.response.status_code == 404


def test_large_stdin_to_a_slow_reader_arrives_whole(daemon):
    data = os.urandom(12 << 20)
    with ws(daemon) as s:
        # The reader starts late: the window fills and the read loop waits.
        s.send(json.dumps({"type": "start", "command": "sh", "args": ["-c", "sleep 1; sha256sum"]}))
        for i in range(0, len(data), 256 * 1024):
            s.send(json.dumps({"type": "stdin", "data_base64": base64.b64encode(data[i:i + 256 * 1024]).decode()}))
        s.send('{"type":"close_stdin"}')
        frames, closed = frames_until_close(s)
    out = b"".join(base64.b64decode(f["data_base64"]) for f in frames if f["type"] == "stdout")
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert frames[-1] == {"type": "exit", "code": 0} and closed.rcvd.code == 1000


def test_signal_and_heartbeat(daemon):
    with ws(daemon) as s:
        s.send(json.dumps({"type": "start", "command": "sh", "args": ["-c", "echo ready; exec sleep 30"]}))
        assert json.loads(s.recv(timeout=20)) == {"type": "stdout", "data_base64": base64.b64encode(b"ready\n").decode()}
        s.send('{"type":"heartbeat"}')
        s.send(json.dumps({"type": "signal", "signal": "TERM"}))
        frames, _ = frames_until_close(s)
    assert frames[-1] == {"type": "exit", "code": 143}


def commands(d):
    ls = tether_cli(d, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    listed = json.loads(ls.stdout)
    return listed["commands"] if isinstance(listed, dict) else listed


def test_a_command_nobody_is_attached_to_outlives_the_idle_timeout():
    # What a cut or a restart leaves behind: the SDK watches with a new
    # command, nobody attaches to the first, whose supervisor is the
    # durable execution.
    with Daemon("--idle-timeout", "1") as d:
        with ws(d) as s:
            s.send(json.dumps({"type": "start", "command": "sh", "args": ["-c", "echo $TETHER_COMMAND_ID; exec sleep 60"]}))
            first = json.loads(s.recv(timeout=20))
        cid = base64.b64decode(first["data_base64"]).decode().strip()
        # Past the daemon's idle timeout (a non-event: nothing to await).
        time.sleep(2.5)
        mine = [c for c in commands(d) if c["command"] == cid]
        assert mine and mine[0].get("exit") is None, mine
        assert tether_cli(d, "kill", cid).returncode == 0


def test_a_client_waiting_on_a_full_stdin_window_is_kept_alive():
    # The command takes no stdin for longer than the peer timeout; the
    # client is held back by TCP meanwhile, and must not be dropped as
    # silent (its input would be lost).
    data = os.urandom(8 << 20)
    with Daemon("--ping-interval", "0.2", "--peer-timeout", "1") as d:
        with ws(d) as s:
            s.send(json.dumps({"type": "start", "command": "sh", "args": ["-c", "sleep 3; sha256sum"]}))
            for i in range(0, len(data), 256 * 1024):
                s.send(json.dumps({"type": "stdin", "data_base64": base64.b64encode(data[i:i + 256 * 1024]).decode()}))
            s.send('{"type":"close_stdin"}')
            frames, closed = frames_until_close(s)
    out = b"".join(base64.b64decode(f["data_base64"]) for f in frames if f["type"] == "stdout")
    assert frames and frames[-1] == {"type": "exit", "code": 0}, (frames[-1:], closed)
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert closed.rcvd.code == 1000
