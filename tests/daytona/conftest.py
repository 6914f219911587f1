"""The real `daytona` SDK (pinned, sync and async) against a tether daemon
serving its dialect at /compat/daytona (protocol/compat/daytona.md).
TETHER_BIN names the daemon binary (scripts/daytona-tests.sh).

A test takes `box`, one sandbox of each SDK in turn: `box.sb` is the SDK's
`Sandbox` or `AsyncSandbox`, and `box(x)` is the value of a call made on it
(awaited on the module's event loop for the async SDK; an iterator is
drained into a list), so one test body drives both transports (urllib3,
httpx and httpx_ws for the sync SDK, aiohttp for the async one)."""
import asyncio
import inspect
import os
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pysupport"))

import pytest
import tether_testing
from tether_testing import CutProxy, CuttableProxy, Daemon, tether_cli  # noqa: F401 (the tests import them from here)

#: Where the dialect's control plane lives under a daemon's URL.
API = "/compat/daytona/api"

#: Longest a test may take (SIGALRM), so a hang is a failure, not a stall.
TEST_LIMIT = 60


@pytest.fixture(autouse=True)
def time_limit():
    with tether_testing.time_limit(TEST_LIMIT):
        yield


def config(url, token):
    from daytona import DaytonaConfig

    return DaytonaConfig(api_url=url + API, api_key=token)


class Loop:
    """An event loop for the async SDK, kept across the calls of a module
    (its aiohttp sessions belong to the loop that made them)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()

    def run(self, aw, within=45):
        return self.loop.run_until_complete(asyncio.wait_for(aw, within))

    def close(self):
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class Box:
    """One sandbox of the sync or the async SDK (see the module docstring)."""

    def __init__(self, kind, daytona, sb, loop):
        self.kind, self.daytona, self.sb, self.loop = kind, daytona, sb, loop
        self.is_async = kind == "async"

    def __call__(self, x, within=45):
        if inspect.isawaitable(x):
            return self.loop.run(x, within)
        if inspect.isasyncgen(x):
            async def drain():
                return [item async for item in x]
            return self.loop.run(drain(), within)
        if inspect.isgenerator(x):
            return list(x)
        return x

    def pause(self, seconds=0.05):
        """Lets time pass while polling (the async SDK's tasks run meanwhile)."""
        if self.is_async:
            self.loop.run(asyncio.sleep(seconds))
        else:
            time.sleep(seconds)

    def poll(self, what, within=20, every=0.05):
        """Calls `what` until it returns something true; returns that."""
        deadline = time.monotonic() + within
        while True:
            got = what()
            if got:
                return got
            assert time.monotonic() < deadline, "not within %ss: %r" % (within, got)
            self.pause(every)

    def finished(self, sid, cid, within=20):
        """Waits for a session command to end; returns its `Command`."""
        def ended():
            c = self(self.sb.process.get_session_command(sid, cid))
            return c if c.exit_code is not None else None
        return self.poll(ended, within)

    def follow(self, sid, cid):
        """Starts get_session_command_logs_async; see Follow."""
        return Follow(self, sid, cid)

    def pty(self, pty_id, **kwargs):
        """create_pty_session; returns a Term."""
        buf = bytearray()
        if self.is_async:
            h = self(self.sb.process.create_pty_session(pty_id, on_data=buf.extend, **kwargs))
        else:
            h = self.sb.process.create_pty_session(id=pty_id, **kwargs)
        return Term(self, h, buf)

    def connect_pty(self, pty_id):
        """connect_pty_session; returns a Term."""
        buf = bytearray()
        if self.is_async:
            h = self(self.sb.process.connect_pty_session(pty_id, on_data=buf.extend))
        else:
            h = self.sb.process.connect_pty_session(pty_id)
        return Term(self, h, buf)


class Follow:
    """A log follow running beside the test: the sync SDK's call (an `async
    def` over a blocking WebSocket) in a thread of its own under
    `asyncio.run`, as a sync caller runs it; the async SDK's as a task on the
    module's loop. `events` is every callback call in order, as (stream,
    text)."""

    def __init__(self, box, sid, cid):
        self.box, self.events, self.error = box, [], None
        coro = box.sb.process.get_session_command_logs_async(
            sid, cid, lambda s: self.events.append(("stdout", s)), lambda s: self.events.append(("stderr", s)))
        if box.is_async:
            self.task = box.loop.loop.create_task(coro)
        else:
            self.done = threading.Event()
            threading.Thread(target=self._run, args=(coro,), daemon=True).start()

    def _run(self, coro):
        try:
            asyncio.run(coro)
        except BaseException as e:  # handed to result()
            self.error = e
        finally:
            self.done.set()

    def text(self, stream):
        return "".join(t for s, t in self.events if s == stream)

    def result(self, within=30):
        """Waits for the follow to end; raises what the SDK raised."""
        if self.box.is_async:
            self.box.loop.run(asyncio.shield(self.task), within)
            return
        assert self.done.wait(within), "the follow did not end within %ss" % within
        if self.error is not None:
            raise self.error


class Term:
    """A PTY handle and everything it has output so far."""

    def __init__(self, box, handle, buf):
        self.box, self.handle, self.buf = box, handle, buf

    def send(self, text):
        self.box(self.handle.send_input(text))

    def _pump(self):
        if self.box.is_async:
            self.box.pause(0.05)
        else:
            # Returns after 0.2 s with the session still connected. From
            # httpx-ws 0.10 a receive that times out raises TimeoutError
            # where the SDK expects queue.Empty, so the SDK records
            # "WebSocket error: " as the session's error for good, against
            # any server (trap T19 in protocol/compat/daytona.md). Only
            # that record, made by this wait running out its 0.2 s, is
            # undone; an error seen earlier or sooner stays.
            before, t = self.handle._error, time.monotonic()
            self.handle.wait(on_data=self.buf.extend, timeout=0.2)
            timed_out = time.monotonic() - t >= 0.2
            if before is None and timed_out and self.handle._error == "WebSocket error: ":
                self.handle._error = None

    def expect(self, pattern, within=10, start=0):
        """Waits until the output (from byte `start`) matches `pattern`."""
        deadline = time.monotonic() + within
        while True:
            text = self.buf[start:].decode("utf-8", "replace")
            m = re.search(pattern, text)
            if m:
                return m
            assert time.monotonic() < deadline, (pattern, text[-2000:])
            self._pump()

    def wait(self, within=15):
        """handle.wait(): the PtyResult once the program has exited."""
        if self.box.is_async:
            return self.box(self.handle.wait(), within)
        return self.handle.wait(on_data=self.buf.extend, timeout=within)

    def resize(self, size):
        return self.box(self.handle.resize(size))

    def kill(self):
        self.box(self.handle.kill())

    def disconnect(self):
        self.box(self.handle.disconnect())


def open_box(kind, url, token, loop):
    """A Box on the daemon at `url` (`loop`: the module's Loop, for async)."""
    from daytona import AsyncDaytona, Daytona

    if kind == "sync":
        d = Daytona(config(url, token))
        return Box(kind, d, d.get("local"), loop)

    async def make():
        # The async client starts its tasks on the running loop.
        d = AsyncDaytona(config(url, token))
        try:
            return Box(kind, d, await d.get("local"), loop)
        except BaseException:
            await d.close()
            raise

    return loop.run(make())


def close_box(box):
    if box.is_async:
        box.loop.run(box.daytona.close())


@pytest.fixture(scope="module")
def daemon():
    with Daemon() as d:
        yield d


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def boxes(daemon, loop):
    """One Box per SDK on the module's daemon, made once."""
    made = {kind: open_box(kind, daemon.url, daemon.token, loop) for kind in ("sync", "async")}
    yield made
    close_box(made["async"])


@pytest.fixture(params=["sync", "async"])
def box(request, boxes):
    return boxes[request.param]


@pytest.fixture(params=["sync", "async"])
def kind(request):
    """For tests that make their own Box (another daemon, a proxy)."""
    return request.param


@pytest.fixture(scope="module")
def confined():
    """A daemon serving files only beneath `root` (--files-root), with a
    file outside it."""
    top = os.path.realpath(tempfile.mkdtemp(prefix="tether-daytona-confined-"))
    root, outside = os.path.join(top, "root"), os.path.join(top, "outside")
    os.makedirs(root)
    os.makedirs(outside)
    with open(os.path.join(outside, "secret.txt"), "w") as f:
        f.write("secret\n")
    with open(os.path.join(root, "inside.txt"), "w") as f:
        f.write("inside\n")
    with Daemon("--files-root", root, cwd=top) as d:
        d.files_root, d.outside = root, outside
        yield d


def utf8_text(size):
    """About `size` bytes of UTF-8 text in numbered lines (multi-byte
    characters in every line)."""
    out, n, i = [], 0, 0
    while n < size:
        line = "ligne %07d: héllo wörld ✓ 日本語\n" % i
        out.append(line)
        n += len(line.encode())
        i += 1
    return "".join(out)


#: A Python program that prints utf8_text(size) (size in argv[1]) in
#: writes of 1024 lines (about 44 kB), whatever PYTHONUNBUFFERED says: a
#: ring charges 64 bytes per chunk read, so a read per 44-byte line would
#: leave a 16 MiB ring holding only about 7 MB of it.
UTF8_PROGRAM = """import os, sys
size, n, i = int(sys.argv[1]), 0, 0
held = []
def emit(b):
    while b:
        b = b[os.write(1, b):]
while n < size:
    line = ("ligne %07d: h\\u00e9llo w\\u00f6rld \\u2713 \\u65e5\\u672c\\u8a9e\\n" % i).encode()
    held.append(line)
    n += len(line)
    i += 1
    if len(held) == 1024:
        emit(b"".join(held))
        held = []
emit(b"".join(held))
"""


def write_program(root, name="utf8.py"):
    """Puts UTF8_PROGRAM into the daemon's directory; returns its path."""
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write(UTF8_PROGRAM)
    return path


def proc_gone(pid):
    """Whether process `pid` has ended (gone from /proc, or a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
