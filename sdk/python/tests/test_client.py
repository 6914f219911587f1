"""The client itself: what closing leaves behind (nothing), sharing one
`Client` between threads, limits as typed errors, and the package's
typing marker."""

import asyncio
import importlib.resources
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from tether_testing import Daemon

import tether


def _tether_threads():
    return [t for t in threading.enumerate() if t.name.startswith("tether")]


def _connections(daemon):
    """The daemon's established TCP connections (from /proc/net/tcp)."""
    port = int(daemon.url.rsplit(":", 1)[1])
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.split(":")[1], 16) == port and state == "01":
                n += 1
    return n


def test_closing_a_client_leaves_no_thread_and_no_connection(daemon):
    before_threads, before_conns = len(_tether_threads()), _connections(daemon)
    with tether.Client(daemon.url, token=daemon.token) as c:
        h = c.run(["sleep", "30"], wait=False)
        c.files.write("left-behind.txt", b"x")
        assert len(_tether_threads()) == before_threads + 1
        assert _connections(daemon) > before_conns
    assert len(_tether_threads()) == before_threads
    # The daemon side of the sockets goes once the client's are closed.
    for _ in range(100):
        if _connections(daemon) == before_conns:
            break
        threading.Event().wait(0.02)
    assert _connections(daemon) == before_conns
    with tether.Client(daemon.url, token=daemon.token) as c:
        c.kill(h.command_id)


def test_closing_an_async_client_leaves_no_task(daemon):
    async def main():
        before = asyncio.all_tasks()
        async with tether.AsyncClient(daemon.url, token=daemon.token) as c:
            h = await c.run(["sh", "-c", "cat; echo done"], wait=False, stdin=iter([b"a"] * 3))
            await c.exec(["true"])
            assert len(asyncio.all_tasks() - before) > 0
        left = asyncio.all_tasks() - before
        assert left == set(), left
        return h.command_id

    cid = asyncio.run(asyncio.wait_for(main(), 60))
    with tether.Client(daemon.url, token=daemon.token) as c:
        assert c.status(cid).state in ("running", "exited")


def test_one_client_is_safe_to_share_between_threads(daemon):
    with tether.Client(daemon.url, token=daemon.token) as c, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: c.exec(["echo", str(i)]).stdout, range(64)))
    assert results == [f"{i}\n".encode() for i in range(64)]


def test_daemon_limits_are_limit_exceeded():
    with Daemon("--max-commands", "2") as d, tether.Client(d.url, token=d.token) as c:
        held = [c.run(["sleep", "30"], wait=False) for _ in range(2)]
        with pytest.raises(tether.LimitExceeded) as e:
            c.exec(["true"])
        assert e.value.code == "limit_exceeded"
        for h in held:
            h.kill()


def test_callbacks_run_in_the_consuming_thread_and_may_call_the_client(daemon):
    seen = []
    with tether.Client(daemon.url, token=daemon.token) as c:

        def on_stdout(data):
            seen.append((threading.current_thread().name, c.exec(["echo", "nested"]).stdout, data))

        c.run("echo outer", on_stdout=on_stdout)
    assert seen == [(threading.current_thread().name, b"nested\n", b"outer\n")]


def test_the_package_is_typed():
    assert importlib.resources.files("tether").joinpath("py.typed").is_file()
