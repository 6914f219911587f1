"""The sandbox, one-shot commands (exec, code_run), the key, and what the
dialect does not serve, with the real `daytona` SDK, sync and async."""
import hashlib
import os
import re
import time

import httpx
import pytest
from daytona import CodeRunParams, DaytonaError

from conftest import Daemon, close_box, open_box, utf8_text, write_program


def digest(s):
    return hashlib.sha256(s.encode()).hexdigest()


def test_get_hands_back_this_host_as_a_started_sandbox(box, daemon):
    sb = box.sb
    assert sb.id == "local"
    assert sb.state == "started"
    assert sb.toolbox_proxy_url == daemon.url + "/compat/daytona/toolbox"
    assert isinstance(sb.cpu, int) and sb.cpu >= 1
    assert box(sb.get_user_home_dir()) == os.path.expanduser("~")
    assert box(sb.get_work_dir()) == daemon.root


def test_exec_returns_combined_output_and_exit_code(box):
    r = box(box.sb.process.exec("echo héllo; echo err >&2; echo again; exit 3"))
    # stderr goes into the same pipe: the order is the order written.
    assert (r.result, r.exit_code) == ("héllo\nerr\nagain\n", 3)
    assert r.artifacts.stdout == r.result
    assert box(box.sb.process.exec("true")).exit_code == 0


def test_exec_takes_cwd_and_env(box, daemon):
    os.makedirs(os.path.join(daemon.root, "sub"), exist_ok=True)
    r = box(box.sb.process.exec('echo "$PWD:$A:$B"', cwd=os.path.join(daemon.root, "sub"),
                                env={"A": "1", "B": "two words"}))
    assert r.result == "%s/sub:1:two words\n" % daemon.root
    assert box(box.sb.process.exec("pwd", cwd="/")).result == "/\n"


def test_exec_timeout_raises_process_execution_timeout(box):
    from daytona import DaytonaProcessExecutionTimeoutError

    t0 = time.monotonic()
    with pytest.raises(DaytonaProcessExecutionTimeoutError) as e:
        box(box.sb.process.exec("sleep 30", timeout=1))
    # The daemon answers before the client's own timeout + 5 s.
    assert time.monotonic() - t0 < 6
    assert e.value.status_code == 408


def test_what_axum_refuses_still_comes_in_the_envelope(box, daemon):
    """A body over the toolbox's 2 MiB limit (axum's own 413) and a method
    a route does not take (405) are answered in the error envelope, so the
    SDK raises with the daemon's message and the status."""
    from daytona import DaytonaError

    with pytest.raises(DaytonaError) as e:
        box(box.sb.process.exec("echo " + "a" * (3 << 20)))
    assert e.value.status_code == 413
    assert "length limit" in str(e.value)
    r = httpx.put(daemon.url + "/compat/daytona/toolbox/local/process/execute",
                  headers={"Authorization": "Bearer " + daemon.token}, timeout=10)
    assert r.status_code == 405
    body = r.json()
    assert (body["statusCode"], body["path"], body["source"]) == (405, "/process/execute", "DAYTONA_DAEMON")
    assert body["message"]


def test_exec_output_of_10_mb_is_byte_exact(box, daemon):
    program = write_program(daemon.root)
    want = utf8_text(10 << 20)
    r = box(box.sb.process.exec("python3 %s %d" % (program, 10 << 20), timeout=60), within=70)
    assert r.exit_code == 0
    assert (len(r.result), digest(r.result)) == (len(want), digest(want))


def test_code_run_runs_python_by_default(box):
    r = box(box.sb.process.code_run('import sys\nprint("héllo", 6 * 7)\nprint("e", file=sys.stderr)\nsys.exit(2)'))
    assert (r.result, r.exit_code) == ("héllo 42\ne\n", 2)
    assert r.artifacts.stdout == r.result and r.artifacts.charts == []


def test_code_run_takes_argv_and_env(box):
    r = box(box.sb.process.code_run('import os, sys\nprint(sys.argv[1:], os.environ["K"])',
                                    params=CodeRunParams(argv=["a b", "c"], env={"K": "vé"})))
    assert (r.result, r.exit_code) == ("['a b', 'c'] vé\n", 0)


def test_code_run_errors_are_raw_api_exceptions(box):
    # code_run has no intercept_errors: its failures are the generated
    # clients' ApiException, not DaytonaError (protocol §6, T15).
    if box.is_async:
        from daytona_toolbox_api_client_async.exceptions import ApiException
    else:
        from daytona_toolbox_api_client.exceptions import ApiException
    with pytest.raises(ApiException) as e:
        box(box.sb.process.code_run("import time; time.sleep(30)", timeout=1))
    assert not isinstance(e.value, DaytonaError)
    assert e.value.status == 408
    assert "PROCESS_EXECUTION_TIMEOUT" in e.value.body


def test_a_wrong_key_is_refused(kind, daemon, loop):
    from daytona import DaytonaAuthenticationError

    with pytest.raises(DaytonaAuthenticationError) as e:
        open_box(kind, daemon.url, "wrong-" + daemon.token, loop)
    assert e.value.status_code == 401


def test_a_wrong_key_is_refused_by_the_toolbox_and_its_websockets(daemon, loop, kind):
    # A sandbox got with the right key, then the key changed in the toolbox
    # client's default headers (which every toolbox call and upgrade copies).
    from daytona import DaytonaAuthenticationError

    b = open_box(kind, daemon.url, daemon.token, loop)
    try:
        headers = b.daytona._toolbox_api_client.default_headers
        headers["Authorization"] = "Bearer wrong-" + daemon.token
        with pytest.raises(DaytonaAuthenticationError):
            b(b.sb.process.exec("echo no"))
        with pytest.raises(DaytonaAuthenticationError):
            b.pty("wrong-key-" + kind)
    finally:
        close_box(b)


def test_unserved_features_raise_a_clear_501(box):
    calls = [lambda: box.sb.git.status("."), lambda: box.daytona.list(), lambda: box.daytona.create(timeout=0)]
    for call in calls:
        t0 = time.monotonic()
        with pytest.raises(DaytonaError) as e:
            box(call(), within=10)
        assert time.monotonic() - t0 < 5
        assert e.value.status_code == 501, e.value
        assert re.search(r"not (served|implemented|supported)", str(e.value), re.IGNORECASE), str(e.value)


@pytest.fixture(scope="module")
def named():
    with Daemon("--sandbox-id", "box1") as d:
        yield d


def test_a_sandbox_id_names_the_host(named, loop, kind):
    from daytona import AsyncDaytona, Daytona, DaytonaNotFoundError

    from conftest import config

    if kind == "sync":
        d = Daytona(config(named.url, named.token))
        sb = d.get("box1")
        assert sb.id == "box1"
        assert sb.process.exec("echo hi").result == "hi\n"
        # `local` still answers, under the canonical id.
        assert d.get("local").id == "box1"
        with pytest.raises(DaytonaNotFoundError):
            d.get("box2")
        return

    async def scenario():
        async with AsyncDaytona(config(named.url, named.token)) as d:
            sb = await d.get("box1")
            assert sb.id == "box1"
            assert (await sb.process.exec("echo hi")).result == "hi\n"
            assert (await d.get("local")).id == "box1"
            with pytest.raises(DaytonaNotFoundError):
                await d.get("box2")

    loop.run(scenario())


def test_an_unknown_sandbox_is_not_found(box):
    from daytona import DaytonaNotFoundError

    with pytest.raises(DaytonaNotFoundError):
        box(box.daytona.get("elsewhere"))


@pytest.fixture(scope="module")
def one_command():
    with Daemon("--max-commands", "1") as d:
        yield d


def test_a_daemon_limit_is_a_rate_limit_error(one_command, loop, kind):
    from daytona import DaytonaRateLimitError, SessionExecuteRequest

    b = open_box(kind, one_command.url, one_command.token, loop)
    try:
        p, sid = b.sb.process, "busy-" + kind
        b(p.create_session(sid))
        b(p.execute_session_command(sid, SessionExecuteRequest(command="sleep 30", run_async=True)))
        with pytest.raises(DaytonaRateLimitError) as e:
            b(p.exec("echo one too many"))
        assert e.value.status_code == 429
        b(p.delete_session(sid))
    finally:
        close_box(b)
