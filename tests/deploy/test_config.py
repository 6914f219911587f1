"""deploy/config.example.toml: every key, the commented-out defaults
included, is a flag of `tether serve` with a value of the right kind; and,
once the daemon takes --config, a daemon started with it does what it says."""
import http.client
import os
import re

import pytest

from deploy_support import DEPLOY, config_problems, serve_flags
from tether_testing import Daemon

EXAMPLE = os.path.join(DEPLOY, "config.example.toml")


def test_every_key_of_the_example_is_a_serve_flag():
    assert config_problems(open(EXAMPLE).read()) == []


def test_the_example_sets_what_a_deployment_changes():
    import tomllib

    doc = tomllib.load(open(EXAMPLE, "rb"))
    assert doc["listen"] == "0.0.0.0:7070"
    assert doc["allow-host"] and isinstance(doc["allow-host"], list)


@pytest.mark.parametrize(
    "text, said",
    [
        ('lisen = "0.0.0.0:7070"\n', "'lisen' is not a flag"),
        ("keep-commands-on-shutdown = 1\n", "a switch given 1"),
        ("ring-bytes = true\n", "an option given True"),
        ('token = "secret-in-a-file"\n', "'token' is not a flag"),
        ('listen = "0.0.0.0:7070\n', "not TOML"),
        ('# alow-host = ["x"]\n', "'alow-host' is not a flag"),
    ],
    ids=["typo", "switch-not-bool", "option-bool", "client-option", "bad-toml", "commented-typo"],
)
def test_the_checker_catches_a_bad_config(text, said):
    problems = config_problems(text)
    assert any(said in p for p in problems), problems


def get(url, path, host):
    """GET with this Host header: (status, body)."""
    addr = url.removeprefix("http://")
    c = http.client.HTTPConnection(addr, timeout=10)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_a_daemon_started_with_the_example_does_what_it_says(tmp_path):
    if "config" not in serve_flags():
        pytest.skip("this daemon has no --config yet")
    text = open(EXAMPLE).read()
    # Loopback and a free port; the rest as shipped.
    text = re.sub(r'^listen = .*$', 'listen = "127.0.0.1:0"', text, flags=re.M)
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    # Daemon also passes --listen 127.0.0.1:0 (a flag wins over the file):
    # the file sets everything else.
    with Daemon("--config", str(cfg)) as d:
        assert get(d.url, "/healthz", "tether.example.com") == (200, b"ok\n")
        assert get(d.url, "/healthz", "evil.example.net")[0] == 403
