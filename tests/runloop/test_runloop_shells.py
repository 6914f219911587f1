"""Named shells through the Runloop SDK: 2.0.0's `devbox.shell(name)`, and
on 3.0.0 the same wire request with `shell_name` in `extra_body`. State
carries from command to command, commands run one at a time in the order
they came, whoever sends them."""
import threading

from conftest import in_shell, tether_cli


def test_cwd_and_environment_carry_over(devbox, tmp_path):
    run, _ = in_shell(devbox, "state")
    assert run("cd %s" % tmp_path).exit_code == 0
    assert run("export GREETING=hi").exit_code == 0
    r = run("pwd; echo $GREETING")
    assert r.stdout() == "%s\nhi\n" % tmp_path
    # Another shell has its own state.
    other, _ = in_shell(devbox, "state-2")
    assert other("echo ${GREETING:-none}").stdout() == "none\n"


def test_commands_queue_in_order(devbox):
    run, run_async = in_shell(devbox, "queue")
    first = run_async("sleep 1; echo 1")
    later = [run_async("echo %d" % i) for i in range(2, 6)]
    assert later[-1].get_state().status == "queued"
    outs = [first.result().stdout()] + [e.result().stdout() for e in later]
    assert outs == ["%d\n" % i for i in range(1, 6)]


def test_concurrent_submitters_lose_no_update(devbox, tmp_path):
    run, _ = in_shell(devbox, "counter")
    log = tmp_path / "log"
    run("export N=0")
    errors = []

    def submit(k):
        try:
            for j in range(5):
                r = run("N=$((N+1)); echo %d-%d >> %s; echo $N" % (k, j, log))
                assert r.exit_code == 0
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    assert not errors, errors
    lines = log.read_text().splitlines()
    assert sorted(lines) == sorted("%d-%d" % (k, j) for k in range(6) for j in range(5))
    # One at a time: every submitter's own commands kept their order.
    for k in range(6):
        assert [l for l in lines if l.startswith("%d-" % k)] == ["%d-%d" % (k, j) for j in range(5)]
    assert run("echo $N").stdout() == "30\n"


def test_a_shell_command_streams_and_is_a_tether_command(daemon, devbox):
    from conftest import Collect

    run, run_async = in_shell(devbox, "streams")
    out = Collect()
    r = run("for i in 1 2 3; do echo $i; done; echo err >&2", stdout=out)
    assert out.text() == "1\n2\n3\n" and r.stderr() == "err\n"
    ex = run_async("sleep 20")
    assert ex.execution_id in tether_cli(daemon, "ls").stdout
    ex.kill()
    assert ex.result().exit_code != 0
    # The shell is still there for the next command.
    assert run("echo after").stdout() == "after\n"


def test_a_bad_shell_name_is_refused(devbox):
    import pytest
    from runloop_api_client import BadRequestError

    run, _ = in_shell(devbox, "no spaces/allowed")
    with pytest.raises(BadRequestError):
        run("true")
