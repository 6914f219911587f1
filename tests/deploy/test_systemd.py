"""deploy/systemd: the unit passes `systemd-analyze verify` (which would
fail on a broken one: checked), its hardening scores as it should, its
settings are the ones the daemon needs, and the sysusers file makes the
user it runs as. systemd is not PID 1 here: nothing is started by it."""
import os
import re
import subprocess

import pytest

from deploy_support import DEPLOY, exec_start_argv, serve_flags, tether_bin, unit_settings

UNIT = os.path.join(DEPLOY, "systemd", "tether.service")
SYSUSERS = os.path.join(DEPLOY, "systemd", "tether.sysusers.conf")


def installable(tmp_path, text=None):
    """The unit (or `text`) in a temp dir with ExecStart's binary pointed at
    the real one: verify checks that it exists and is executable."""
    text = text if text is not None else open(UNIT).read()
    path = tmp_path / "tether.service"
    path.write_text(text.replace("/usr/local/bin/tether", tether_bin()))
    return path


def verify(path):
    """`systemd-analyze verify`: (exit code, what it printed). Unknown keys
    and bad values are only warnings (exit 0), so what it prints counts."""
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).strip()


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    rc, out = verify(installable(tmp_path))
    assert (rc, out) == (0, "")


@pytest.mark.parametrize(
    "change, said",
    [
        (("ProtectSystem=strict", "ProtectSytem=strict"), "Unknown key"),
        (("KillMode=mixed", "KillMode=sometimes"), "Failed to parse"),
        (("[Service]", "[Servce]"), "Unknown section"),
    ],
    ids=["unknown-directive", "bad-value", "unknown-section"],
)
def test_verify_catches_a_broken_unit(tmp_path, change, said):
    text = open(UNIT).read()
    # The line itself, not a mention in a comment.
    line = re.compile("^%s$" % re.escape(change[0]), re.M)
    assert line.search(text)
    rc, out = verify(installable(tmp_path, line.sub(change[1], text, count=1)))
    assert (rc, out) != (0, ""), "verify passed a broken unit"
    assert said in out, out


def test_verify_catches_a_missing_binary(tmp_path):
    path = tmp_path / "tether.service"
    path.write_text(open(UNIT).read().replace("/usr/local/bin/tether", str(tmp_path / "no-such-tether")))
    rc, out = verify(path)
    assert rc != 0 and "is not executable" in out, (rc, out)


def test_the_units_exposure_stays_low(tmp_path):
    # systemd's own score of the sandboxing (0 = locked down, 10 = none);
    # the unit scores 4.6 ("OK"): the commands it runs need the rest.
    p = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(installable(tmp_path))],
        capture_output=True, text=True, timeout=30,
    )
    m = re.search(r"Overall exposure level for tether.service: ([0-9.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 5.0, p.stdout


def test_the_unit_has_what_the_daemon_needs():
    s = unit_settings(UNIT)["Service"]
    one = dict(s)
    assert one["Type"] in ("exec", "simple")  # no sd_notify in the daemon
    assert one["ExecReload"] == "/bin/kill -USR2 $MAINPID"  # restart in place
    assert one["Delegate"] == "yes"  # --cgroup auto makes cgroups below its own
    assert one.get("ProtectControlGroups", "no") == "no"  # ... which must stay writable
    assert one["KillMode"] == "mixed"  # SIGTERM to the daemon alone
    assert one["Restart"] == "on-failure"
    assert one["ProtectSystem"] == "strict" and one["NoNewPrivileges"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["StateDirectory"] == "tether" and one["ConfigurationDirectory"] == "tether"
    env = [v for k, v in s if k == "Environment"]
    assert "TETHER_TOKEN_FILE=%S/tether/token" in env  # the token in the state directory
    assert not any(v.startswith("TETHER_TOKEN=") for v in env)  # never in a world-readable file
    argv = exec_start_argv(UNIT)
    assert argv[:2] == ["/usr/local/bin/tether", "serve"]
    assert argv[argv.index("--config") + 1] == "/etc/tether/config.toml"


def test_the_units_flags_are_the_daemons():
    argv = exec_start_argv(UNIT)
    flags = [a[2:].split("=")[0] for a in argv if a.startswith("--")]
    have = serve_flags()
    missing = [f for f in flags if f not in have and f != "config"]
    assert not missing, missing
    if "config" not in have:
        pytest.skip("this daemon has no --config yet (the unit uses it)")


def test_sysusers_makes_the_user_the_unit_runs_as(tmp_path):
    (tmp_path / "etc").mkdir()
    p = subprocess.run(["systemd-sysusers", "--root", str(tmp_path), SYSUSERS], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    one = dict(unit_settings(UNIT)["Service"])
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    user = users[one["User"]]
    assert 0 < int(user[2]) < 1000, user  # a system user
    assert user[5] == "/var/lib/" + one["StateDirectory"], user  # its home is the state directory
    groups = [line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()]
    assert one["Group"] in groups
