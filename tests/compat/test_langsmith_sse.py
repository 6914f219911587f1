"""The real `langsmith` sandbox client (pinned) over its SSE transport
(LANGSMITH_EXPERIMENTAL_FEATURES=sandbox_sse_exec) against a tether daemon:
POST /compat/langsmith/execute/stream/{start,resume}
(protocol/compat/langsmith.md section 6). The `sse` fixture turns the
transport on and makes the WebSocket paths fail."""
import base64
import hashlib
import json
import os
import threading
import time
import urllib.request

import pytest
from langsmith.sandbox import CommandTimeoutError, SandboxConnectionError, SandboxOperationError

from conftest import CutProxy, Daemon, assert_expires, sandbox


def test_run_returns_output_and_exit_code(sb, sse):
    r = sb.run("echo héllo; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code) == ("héllo\n", "err\n", 3)
    assert sb.run("true").exit_code == 0


def test_callbacks_see_every_chunk(sb, sse):
    seen_out, seen_err = [], []
    r = sb.run("for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.05; done",
               on_stdout=seen_out.append, on_stderr=seen_err.append)
    assert "".join(seen_out) == "1\n2\n3\n" == r.stdout
    assert "".join(seen_err) == "e1\ne2\ne3\n" == r.stderr
    assert r.exit_code == 0


def test_a_handle_iterates_to_the_exit(sb, sse):
    h = sb.run("printf 'a\\nb\\n'; printf 'c' >&2; exit 4", wait=False)
    # The client's own id comes back, as from the real dataplane.
    assert not h.command_id.startswith("c-"), h.command_id
    assert h.pid > 0
    chunks = list(h)
    assert "".join(c.data for c in chunks if c.stream == "stdout") == "a\nb\n"
    assert "".join(c.data for c in chunks if c.stream == "stderr") == "c"
    assert h.result.exit_code == 4
    assert (h.last_stdout_offset, h.last_stderr_offset) == (4, 1)


def test_env_cwd_and_run_config(sb, sse, tmp_path):
    r = sb.run('echo "$A"; pwd', env={"A": "one"}, cwd=str(tmp_path))
    assert r.stdout == "one\n%s\n" % tmp_path
    r = sb.run('echo "$B"; pwd', run_config={"work_dir": str(tmp_path), "env_vars": {"B": "two"}})
    assert r.stdout == "two\n%s\n" % tmp_path


def test_start_refusals_raise_operation_errors(sb, sse, tmp_path):
    with pytest.raises(SandboxOperationError) as e:
        sb.run("true", run_config={"user": "nobody-else-%d" % os.getpid()})
    assert e.value.error_type == "CommandError"
    with pytest.raises(SandboxOperationError) as e:
        sb.run("true", cwd=str(tmp_path / "missing"))
    assert e.value.error_type == "CommandError"


def test_timeout_raises_command_timeout(sb, sse):
    t0 = time.monotonic()
    with pytest.raises(CommandTimeoutError):
        sb.run("echo before; sleep 30", timeout=1)
    assert time.monotonic() - t0 < 15


def test_reconnect_from_offsets_gets_the_rest_once(sb, sse):
    h = sb.run("for i in $(seq 1 5); do echo line-$i; sleep 0.05; done", wait=False)
    first = next(iter(h))
    r = sb.reconnect(h.command_id, stdout_offset=len(first.data.encode()))
    assert first.data + r.result.stdout == "".join("line-%d\n" % i for i in range(1, 6))
    # A finished command can be read again from anywhere, past its end too.
    assert sb.reconnect(h.command_id, stdout_offset=3).result.stdout == "e-1\n" + "".join(
        "line-%d\n" % i for i in range(2, 6))
    assert sb.reconnect(h.command_id, stdout_offset=10_000).result.stdout == ""


def test_large_output_survives_cuts_byte_exact(big_ring_daemon, sse):
    # About 3 MB of base64 of random data, the connection cut after every
    # 200 kB from the daemon: the client resumes from its byte cursors each
    # time. The rings hold the whole output, as the command runs on while
    # the client is away.
    proxy = CutProxy(big_ring_daemon["url"], 200_000)
    try:
        sb = sandbox(proxy.url, big_ring_daemon["token"])
        r = sb.run("f=$(mktemp); head -c 2250000 /dev/urandom > $f; "
                   "sha256sum < $f | cut -d' ' -f1 >&2; base64 $f; rm $f", timeout=120)
        assert r.exit_code == 0
        assert len(r.stdout) > 3_000_000
        assert hashlib.sha256(base64.b64decode(r.stdout)).hexdigest() == r.stderr.strip()
        assert proxy.cuts >= 10, proxy.cuts
    finally:
        proxy.close()


def test_a_finished_command_expires_after_its_ttl(sb, sse):
    h = sb.run("echo x", wait=False, ttl_seconds=1)
    assert h.result.exit_code == 0
    assert_expires(sb, h.command_id)


def test_what_needs_a_control_channel_is_refused_client_side(sb, sse):
    # Documents the client: these never reach the daemon over SSE.
    with pytest.raises(ValueError):
        sb.run("tty", pty=True)
    with pytest.raises(ValueError):
        sb.run("cat", close_input=False, wait=False)
    with pytest.raises(ValueError):
        sb.run("true", kill_on_disconnect=True)


def sse_events(resp):
    """(event, data) pairs of a raw event stream, heartbeats left out."""
    event, data = None, []
    for raw in resp:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if event:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())


def test_daemon_shutdown_ends_the_stream_and_the_client_gives_up(sse):
    with Daemon() as d:
        sb = sandbox(d.url, d.token)
        h = sb.run("echo go; sleep 100", wait=False)
        it = iter(h)
        assert next(it).data == "go\n"
        # A second, raw reader of the same command sees the wire format.
        req = urllib.request.Request(
            d.url + "/compat/langsmith/execute/stream/resume",
            data=json.dumps({"command_id": h.command_id, "stdout_offset": 3, "stderr_offset": 0}).encode(),
            headers={"X-Api-Key": d.token, "Content-Type": "application/json"})
        raw = urllib.request.urlopen(req, timeout=30)
        assert raw.headers["Content-Type"] == "text/event-stream"
        events = sse_events(raw)
        assert next(events)[0] == "started"
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(events), daemon=True)
        reader.start()
        t0 = time.monotonic()
        d.proc.terminate()
        # The daemon ends every event stream before it exits.
        reader.join(timeout=15)
        assert not reader.is_alive()
        assert seen == [("error", {"error_type": "ServerShuttingDown", "error": "the daemon is shutting down"})]
        assert d.proc.wait(timeout=15) == 0
        # The client resumes from its cursors with backoff (0.5 to 8 s) and
        # gives up on the 6th failure in a row: the daemon is gone.
        with pytest.raises(SandboxConnectionError) as e:
            for _ in it:
                pass
        assert "Failed to resume the exec stream 6 times" in str(e.value)
        assert time.monotonic() - t0 < 45
