"""The chaos matrix's cells for the Python SDK (row `python`): the blocking
client through the fault proxy in front of a daemon with a short keepalive,
under every fault of the matrix (tests/pysupport/tether_chaos.py: reset,
freeze, refuse, repeated, restart), and `typing`: a reset while input is
being written. The SDK numbers its stdin, so unlike the LangSmith client
every line typed, before, during and after the fault, must arrive once and
in order."""

import threading
import time

import pytest
from tether_chaos import (
    BEFORE,
    CELLS,
    PAD,
    ROUNDS,
    SLOW_READER,
    WAIT,
    Cell,
    Reader,
    chaos_daemon,
    lines_cmd,
    reconnect_ms,
    resets_counted,
)
from tether_testing import FaultProxy

import tether

# A keepalive of 1 s: the client notices a silent connection by itself
# within about 3 s, as the daemon does.
OPTIONS = tether.Options(backoff_initial=0.05, backoff_max=0.5, keepalive=1.0, reconnect_for=60)


@pytest.fixture
def net():
    with chaos_daemon() as d, FaultProxy(d.url) as proxy:
        c = tether.Client(proxy.url, token=d.token, options=OPTIONS)
        try:
            yield d, proxy, c
        finally:
            c.close()


def event_text(ev):
    """An event as the reader's (stream, text); a gap fails the cell."""
    if not isinstance(ev, tether.OutputEvent):
        raise AssertionError(f"not output: {ev}")
    return ev.stream, ev.data.decode()


def start_lines(c, n):
    reader = Reader(c.run(lines_cmd(n), wait=False, timeout=120), text=event_text)
    reader.wait_lines(BEFORE)
    return reader


@pytest.mark.parametrize("round_", ROUNDS)
@pytest.mark.parametrize("fault", sorted(CELLS))
def test_shared_cell(net, fault, round_):
    d, proxy, c = net
    CELLS[fault]("python", d, proxy, lambda n: start_lines(c, n))


@pytest.mark.parametrize("round_", ROUNDS)
def test_typing(net, round_):
    """Numbered 4 KiB input lines from a typist thread, one every 5 ms, to a
    command that reads more slowly; the proxy resets the connection in the
    middle. Every line arrives once and in order."""
    _, proxy, c = net
    with Cell("python", "typing") as cell:
        h = c.run(SLOW_READER, wait=False, timeout=120)
        reader = Reader(h, text=event_text)
        typed = []
        stop = threading.Event()
        progress = threading.Condition()
        errors = []

        def typist():
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    h.write_stdin(f"in-{i} {PAD}\n")
                    with progress:
                        typed.append((time.monotonic(), i))
                        progress.notify_all()
                    stop.wait(0.005)  # typing speed
            except BaseException as e:
                errors.append(e)

        def wait_typed(pred, what):
            with progress:
                assert progress.wait_for(lambda: pred(typed), WAIT), f"the typist did not get to {what}"

        t = threading.Thread(target=typist, daemon=True)
        t.start()
        try:
            wait_typed(lambda s: len(s) >= 100, "line 100")
            proxy.reset()
            back = proxy.restore()
            resets_counted(proxy, 1)
            cell.reconnected(*reconnect_ms(proxy, reader, back, back))
            wait_typed(lambda s: sum(1 for tk, _ in s if tk > back) >= 20, "20 lines after the reconnect")
        finally:
            stop.set()
            t.join(timeout=WAIT)
        assert not t.is_alive() and not errors, errors
        h.close_stdin()
        result = reader.join(timeout=WAIT + len(typed) / 20)
        assert result.exit_code == 0, result.exit_code
        got = reader.texts()
        want = [f"in-{i}" for _, i in typed]
        assert got == want, (
            f"{len(got)} lines echoed for {len(want)} typed; first difference at "
            f"{next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}"
        )
        cell.notes.insert(
            0, f"{len(want)} input lines of 4 KiB typed, every one echoed once and in order; exit 0"
        )
