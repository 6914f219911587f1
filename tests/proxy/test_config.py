"""What the live tests cannot reach in deploy/proxy/: timeouts of an hour
(checked against the daemon's own keepalive instead), the Kubernetes
ingress (no cluster here: its annotations must say what nginx.conf
says), and the Caddyfile's formatting (Caddy warns on every start
otherwise)."""
import os
import re
import shutil
import subprocess

import pytest
from conftest import DEPLOY, ROOT


def read(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return f.read()


def daemon_default(flag):
    binary = os.path.join(ROOT, os.environ.get("TETHER_BIN", "target/debug/tether"))
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=20).stdout
    m = re.search(r"%s <[A-Z_]+>\n\s+[^\n]*\[default: (\d+)\]" % re.escape(flag), out)
    assert m, "no default for %s in `tether serve --help`" % flag
    return int(m.group(1))


def test_proxy_timeouts_outlast_the_daemons_keepalive():
    # A proxy that times a connection out sooner than the daemon would
    # (its peer timeout) cuts healthy, quiet streams.
    peer = daemon_default("--peer-timeout")
    assert daemon_default("--ping-interval") < peer
    nginx = read("nginx.conf")
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        m = re.search(r"^\s*%s (\d+)s;" % directive, nginx, re.M)
        assert m, directive
        assert int(m.group(1)) > peer, (directive, m.group(1), peer)


def test_the_ingress_says_what_nginx_conf_says():
    ingress, nginx = read("ingress.yaml"), read("nginx.conf")

    def annotation(name):
        m = re.search(r'nginx\.ingress\.kubernetes\.io/%s: "?([^"\n]+)"?' % name, ingress)
        assert m, name
        return m.group(1)

    def directive(name):
        m = re.search(r"^\s*%s ([^;]+);" % name, nginx, re.M)
        assert m, name
        return m.group(1)

    assert annotation("proxy-read-timeout") + "s" == directive("proxy_read_timeout")
    assert annotation("proxy-send-timeout") + "s" == directive("proxy_send_timeout")
    assert annotation("proxy-body-size") == directive("client_max_body_size") == "0"
    assert annotation("proxy-buffering") == directive("proxy_buffering") == "off"
    assert annotation("proxy-request-buffering") == directive("proxy_request_buffering") == "off"
    # The prefix is stripped as nginx.conf's trailing-slash proxy_pass does.
    assert annotation("rewrite-target") == "/$2"
    assert re.findall(r"path: (/s/\w+)\(/\|\$\)\(\.\*\)", ingress) == ["/s/a", "/s/b"]
    assert re.findall(r"location (/s/\w+)/ \{", nginx) == ["/s/a", "/s/b"]


def test_the_caddyfile_is_formatted():
    if not shutil.which("caddy"):
        pytest.skip("caddy is not installed (scripts/proxy-tests.sh installs it)")
    r = subprocess.run(["caddy", "fmt", os.path.join(DEPLOY, "Caddyfile")], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout == read("Caddyfile")
