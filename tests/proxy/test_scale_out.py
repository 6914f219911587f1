"""Scaling out: two daemons (sandboxes a and b) behind one proxy address,
routed by path prefix (`/s/a/`, `/s/b/`). Each command lives in one
daemon; its id names that daemon (`--node-id`, by default the sandbox
id), so a router or a client can tell where to ask."""
import os
import subprocess
import time

import httpx
import pytest
import tether
from conftest import ROOT

WAIT = 20


def node_ids_supported():
    binary = os.path.join(ROOT, os.environ.get("TETHER_BIN", "target/debug/tether"))
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=WAIT).stdout
    return "--node-id" in out


def url_for(front, command_id):
    """A router's whole job: the daemon a command id names."""
    node = command_id.split(".", 1)[0]
    return "%s/s/%s" % (front.url, node)


def test_commands_on_two_daemons_through_one_address(front, daemons):
    ids, fifos, clients = {}, {}, {}
    try:
        for name in ("a", "b"):
            d = daemons[name]
            fifos[name] = os.path.join(d.root, "go-%s-%d" % (front.kind, time.monotonic_ns()))
            os.mkfifo(fifos[name])
            clients[name] = tether.Client(front.url + "/s/" + name, token=d.token)
            job = clients[name].exec_detached(
                "echo from-$X; read x < %s; echo $x-$X" % fifos[name], env={"X": name}, name="scale-" + name
            )
            ids[name] = job.command_id
        # Each prefix lists its own daemon's commands, running, and only those.
        for name, other in (("a", "b"), ("b", "a")):
            listed = {info.command: info for info in clients[name].list()}
            assert ids[name] in listed
            assert listed[ids[name]].state == "running", listed[ids[name]]
            assert ids[other] not in listed
        # Attach to both through the one address, then let both finish.
        handles = {name: clients[name].attach(ids[name]) for name in ids}
        for name, h in handles.items():
            for ev in h:
                assert isinstance(ev, tether.OutputEvent), ev
                assert ev.data == b"from-%s\n" % name.encode()
                break
        for name in ids:
            with open(fifos[name], "w") as f:
                f.write("done\n")
        for name, h in handles.items():
            r = h.wait(timeout=WAIT)
            assert (r.exit_code, r.stdout) == (0, b"from-%s\ndone-%s\n" % (name.encode(), name.encode()))
    finally:
        for c in clients.values():
            c.close()
        for f in fifos.values():
            os.unlink(f)


def test_a_command_id_names_the_daemon_that_holds_it(front, daemons):
    a = daemons["a"]
    with tether.Client(front.url + "/s/a", token=a.token) as c:
        cid = c.exec_detached("echo here").command_id
    if not node_ids_supported():
        pytest.xfail("`tether serve --help` has no --node-id: command ids (%s) do not name their daemon" % cid)
    assert cid.startswith("a."), cid
    # So a client (or a router) that holds only the id finds its daemon.
    with tether.Client(url_for(front, cid), token=a.token) as c:
        assert c.status(cid).command == cid
        assert c.attach(cid).wait(timeout=WAIT).stdout == b"here\n"


def test_a_command_asked_of_the_wrong_daemon_is_not_found(front, daemons):
    a, b = daemons["a"], daemons["b"]
    with tether.Client(front.url + "/s/a", token=a.token) as ca:
        cid = ca.exec_detached("echo held-by-a").command_id
        with tether.Client(front.url + "/s/b", token=b.token) as cb:
            # A typed error, at once: no hang, no retry loop.
            t = time.monotonic()
            with pytest.raises(tether.CommandNotFound) as e:
                cb.status(cid)
            assert e.value.code == "not_found"
            with pytest.raises(tether.CommandNotFound):
                cb.attach(cid).wait(timeout=WAIT)
            with pytest.raises(tether.CommandNotFound):
                cb.kill(cid)
            assert time.monotonic() - t < 5
            assert cb.reconnects == 0
        # ... and the command is untouched where it lives.
        assert ca.attach(cid).wait(timeout=WAIT).stdout == b"held-by-a\n"


def test_the_daytona_toolbox_url_keeps_the_prefix(front, daemons):
    b = daemons["b"]
    r = httpx.get(
        front.url + "/s/b/compat/daytona/api/sandbox/b/toolbox-proxy-url",
        headers={"Authorization": "Bearer " + b.token},
        timeout=WAIT,
    )
    assert r.status_code == 200, r.text
    assert r.json()["url"] == front.url + "/s/b/compat/daytona/toolbox"
