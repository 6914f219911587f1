"""TLS: a daemon started with --tls-cert/--tls-key is reached over
https/wss with the system's roots plus `Options(ca_cert=)` (or
TETHER_CA_CERT); an unknown issuer is refused; and the token never goes in
clear text to another host unless allowed."""

import os
import secrets
import subprocess

import pytest
from tether_testing import Daemon

import tether


def make_certs(d):
    """A CA of its own and a certificate it signed for localhost and
    127.0.0.1, made with openssl in directory `d`: (ca, cert, key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=30)

    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tether sdk test CA " + secrets.token_hex(8),
    )
    openssl("req", *ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    )
    return str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem")


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    ca, cert, key = make_certs(tmp_path_factory.mktemp("certs"))
    with Daemon("--tls-cert", cert, "--tls-key", key) as d:
        d.ca = ca
        yield d


def test_https_and_wss_with_a_ca_file(tls_daemon, tmp_path):
    d = tls_daemon
    assert d.url.startswith("https://127.0.0.1:")
    with tether.Client(d.url, token=d.token, options=tether.Options(ca_cert=d.ca)) as c:
        r = c.exec("echo over tls")
        assert (r.exit_code, r.stdout_text) == (0, "over tls\n")
        path = str(tmp_path / "f.bin")
        data = os.urandom(1 << 20)
        c.files.write(path, data)
        assert c.files.read(path) == data


def test_the_ca_file_from_the_environment(tls_daemon, monkeypatch):
    monkeypatch.setenv("TETHER_CA_CERT", tls_daemon.ca)
    with tether.Client(tls_daemon.url, token=tls_daemon.token) as c:
        assert c.exec("true").exit_code == 0


def test_an_unknown_issuer_is_refused(tls_daemon):
    opts = tether.Options(reconnect_for=1.0, connect_timeout=5.0)
    c = tether.Client(tls_daemon.url, token=tls_daemon.token, options=opts)
    try:
        with pytest.raises(tether.ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
            c.exec("true")
    finally:
        c.close()


def test_no_token_in_clear_text_to_another_host(daemon):
    # An IPv4-mapped IPv6 address of 127.0.0.1: this host, but not a
    # loopback address by name.
    port = daemon.url.rsplit(":", 1)[1]
    far = f"http://[::ffff:127.0.0.1]:{port}"
    with pytest.raises(tether.InsecureTransport):
        tether.Client(far, token=daemon.token)
    with pytest.raises(tether.AuthError):
        tether.Client(far, token=daemon.token)
    opts = tether.Options(allow_insecure_token=True)
    with tether.Client(far, token=daemon.token, options=opts) as c:
        assert c.exec("true").exit_code == 0
    # This host by name or loopback address: no question.
    with tether.Client(daemon.url, token=daemon.token) as c:
        assert c.exec("true").exit_code == 0
