"""The chaos matrix's cells for the LangSmith client: the real, unchanged
`langsmith` client against a daemon with a short keepalive
(--peer-timeout 3 --ping-interval 1), through the fault proxy
(`tether-faultproxy`), under every fault of the matrix:

- `reset`: every open connection reset (RST) once;
- `freeze`: nothing passes either way, nothing closes, for the daemon's
  peer timeout + 1 s;
- `refuse`: open connections reset and new ones refused for 3 s;
- `repeated`: three resets about 1 s apart;
- `restart`: `kill -USR2` of the daemon while the output streams;
- `typing`: a reset while input is being sent.

Each cell reads numbered lines through a handle and checks that the client
delivered every line once and in order and that the command lived on to
exit 0, and measures the reconnect time: from the network's return (the
proxy's `restore`, or the restarted daemon's listening line) to the first
line the client delivers over a connection made after it. This client
cannot resume input (what it sends while its socket is down is dropped on
its side, protocol/compat/langsmith.md 5.4), so `typing` checks what the
dialect can promise: input that reached the daemon before the fault (some
of it still queued there, behind a command that reads more slowly than the
input comes), and all input sent once the client is back, arrives once and
in order.

Each cell appends a JSON line to $CHAOS_RESULTS if set (printed by
scripts/chaos-table.py); CHAOS_ROUNDS=N runs every cell N times."""
import json
import os
import threading
import time

import pytest

from conftest import CHAOS_PEER_TIMEOUT, FaultProxy, sandbox

# The client's backoff before its reconnects: 0.5, 1, 2, 4, 8 s, then it
# gives up; every fault here ends well before that.
FREEZE_SECS = CHAOS_PEER_TIMEOUT + 1
REFUSE_SECS = 3
# At most 500 lines/s (2 ms of sleep each): a command of N lines runs at
# least N / 500 s, so the faults below land mid-stream and output goes on
# after them.
MAX_RATE = 500
# Lines delivered before the fault is made.
BEFORE = 100
# Every wait's bound.
WAIT = 30

ROUNDS = range(int(os.environ.get("CHAOS_ROUNDS", "1")))


def lines_cmd(n):
    return "for i in $(seq 1 %d); do echo line-$i; sleep 0.002; done" % n


def lines_for(secs):
    """A line count whose command runs at least `secs` s past the fault."""
    return BEFORE + int(MAX_RATE * secs)


class Reader:
    """Iterates a handle on a thread of its own, noting when each complete
    stdout line was delivered (time.monotonic)."""

    def __init__(self, handle):
        self.h = handle
        self.lines = []  # (time, text)
        self.stderr = []
        self.partial = ""
        self.result = None
        self.error = None
        self.done = False
        self.cv = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        partial = ""
        try:
            for chunk in self.h:
                now = time.monotonic()
                with self.cv:
                    if chunk.stream != "stdout":
                        self.stderr.append(chunk.data)
                        continue
                    partial += chunk.data
                    *complete, partial = partial.split("\n")
                    self.lines.extend((now, line) for line in complete)
                    self.cv.notify_all()
            self.result = self.h.result
        except Exception as e:  # the client's own exceptions: the cell's failure
            self.error = e
        finally:
            with self.cv:
                self.partial = partial
                self.done = True
                self.cv.notify_all()

    def _wait(self, pred, timeout, what):
        with self.cv:
            self.cv.wait_for(lambda: pred() or self.done, timeout)
            if pred():
                return
            if self.done:
                raise AssertionError("the client stopped before %s: %s; %d lines delivered"
                                     % (what, self._why(), len(self.lines)))
            raise AssertionError("no %s within %ss; %d lines delivered" % (what, timeout, len(self.lines)))

    def _why(self):
        if self.error is not None:
            return "%s: %s" % (type(self.error).__name__, self.error)
        return "it ended normally"

    def wait_lines(self, n, timeout=WAIT):
        self._wait(lambda: len(self.lines) >= n, timeout, "%d lines" % n)

    def line_after(self, t, timeout):
        """The time and text of the first line delivered after `t`."""
        def first():
            return next(((lt, text) for lt, text in self.lines if lt > t), None)

        self._wait(lambda: first() is not None, timeout, "line after the fault")
        with self.cv:
            return first()

    def texts(self):
        with self.cv:
            return [text for _, text in self.lines]

    def join(self, timeout=WAIT):
        """Waits for the command's end; returns its ExecutionResult."""
        with self.cv:
            assert self.cv.wait_for(lambda: self.done, timeout), \
                "the command did not end within %ss; %d lines delivered" % (timeout, len(self.lines))
        if self.error is not None:
            raise AssertionError("the client failed: %s" % self._why())
        assert self.result is not None
        return self.result


def reconnect_ms(proxy, reader, armed, back, timeout=WAIT):
    """Milliseconds from `back` (the network's return) to the first line
    the client delivered over a connection made after `armed` (the proxy's
    last restore): lines from before the fault that the client still held
    do not count. The proxy's `reconnected_ms` (from its restore to the
    first daemon byte on a new connection) marks where the new connection
    began. Also returns that figure."""
    deadline = time.monotonic() + timeout
    after = back
    try:
        while True:
            t_line, _ = reader.line_after(after, max(deadline - time.monotonic(), 0))
            ms = proxy.stats()["reconnected_ms"]
            if ms is not None:
                t_new, _ = reader.line_after(max(armed + ms / 1000, back), max(deadline - time.monotonic(), 0))
                return (t_new - back) * 1000, ms
            # A line from the old connection: look at the next one.
            after = t_line
    except AssertionError as e:
        raise AssertionError("no output over a new connection: %s; proxy %s" % (e, proxy.stats())) from None


def resets_counted(proxy, n, timeout=5):
    """Waits until the proxy has counted `n` reset connections (each
    connection counts its own reset as it ends: there is no event to await,
    so this polls, bounded)."""
    deadline = time.monotonic() + timeout
    while (st := proxy.stats())["resets"] < n:
        assert time.monotonic() < deadline, "the reset found no connection: %s" % st
        time.sleep(0.01)


def check_lines(reader, n):
    """Every line-1 .. line-n delivered once and in order, nothing else."""
    got = reader.texts()
    want = ["line-%d" % i for i in range(1, n + 1)]
    if got != want:
        seen, dups = set(), []
        for g in got:
            if g in seen:
                dups.append(g)
            seen.add(g)
        missing = [w for w in want if w not in seen]
        rank = {w: i for i, w in enumerate(want)}
        extra = [g for g in got if g not in rank]
        backwards = [(a, b) for a, b in zip(got, got[1:]) if a in rank and b in rank and rank[b] < rank[a]]
        raise AssertionError(
            "%d lines delivered for %d: %d duplicated %s, %d missing %s, %d unexpected %s, %d out of order %s"
            % (len(got), n, len(dups), dups[:5], len(missing), missing[:5], len(extra), extra[:5],
               len(backwards), backwards[:3]))
    assert reader.partial == "", "an unfinished line at the end: %r" % reader.partial[:80]
    assert not reader.stderr, "".join(reader.stderr)[:200]


def record(fault, ok, ms, detail):
    line = json.dumps({"client": "langsmith", "fault": fault, "pass": ok,
                       "reconnect_ms": None if ms is None else round(ms, 1), "detail": detail})
    print("chaos: " + line)
    path = os.environ.get("CHAOS_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class Cell:
    """One cell's result as it is found: the reconnect time (the worst, if
    several) and notes for its detail. Recorded on leaving, as failed (with
    the reason) if the cell raised."""

    def __init__(self, fault):
        self.fault = fault
        self.ms = None
        self.notes = []
        self.t0 = time.monotonic()

    def reconnected(self, ms, proxy_ms):
        self.ms = ms if self.ms is None else max(self.ms, ms)
        self.notes.append("back %.0f ms (proxy: first byte %.0f ms)" % (ms, proxy_ms))

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        notes = "; ".join(self.notes)
        took = "%.1f s" % (time.monotonic() - self.t0)
        if exc is None:
            record(self.fault, True, self.ms, "%s; %s" % (notes, took))
        else:
            why = ("%s: %s" % (kind.__name__, exc)).replace("\n", " ")[:600]
            record(self.fault, False, self.ms, "%s [%s; %s]" % (why, notes, took))
        return False


@pytest.fixture
def net(chaos_daemon):
    """The daemon, the fault proxy in front of it, and the client's sandbox
    with its dataplane through the proxy."""
    with FaultProxy(chaos_daemon.url) as proxy:
        yield chaos_daemon, proxy, sandbox(proxy.url, chaos_daemon.token)


def start_lines(sb, n):
    h = sb.run(lines_cmd(n), wait=False, timeout=120)
    reader = Reader(h)
    reader.wait_lines(BEFORE)
    return reader


def finish_lines(cell, reader, n):
    result = reader.join(timeout=WAIT + n / 100)
    check_lines(reader, n)
    assert result.exit_code == 0, result.exit_code
    cell.notes.insert(0, "%d lines once each and in order, exit 0" % n)


@pytest.mark.parametrize("round_", ROUNDS)
def test_reset(net, round_):
    d, proxy, sb = net
    n = lines_for(2)
    with Cell("reset") as cell:
        reader = start_lines(sb, n)
        proxy.reset()
        back = proxy.restore()  # marks the moment: the network is back at once
        resets_counted(proxy, 1)
        cell.reconnected(*reconnect_ms(proxy, reader, back, back))
        finish_lines(cell, reader, n)


@pytest.mark.parametrize("round_", ROUNDS)
def test_freeze(net, round_):
    d, proxy, sb = net
    n = lines_for(FREEZE_SECS + 2)
    with Cell("freeze") as cell:
        reader = start_lines(sb, n)
        accepted = proxy.stats()["accepted"]
        proxy.freeze()
        time.sleep(FREEZE_SECS)  # the fault's length, longer than the daemon's peer timeout
        back = proxy.restore()
        cell.reconnected(*reconnect_ms(proxy, reader, back, back))
        # The client cannot notice a freeze by itself (it pings every 30 s):
        # a new connection means the daemon dropped the silent peer.
        st = proxy.stats()
        assert st["accepted"] > accepted, st
        cell.notes.append("frozen %d s, the daemon dropped the silent peer" % FREEZE_SECS)
        finish_lines(cell, reader, n)


@pytest.mark.parametrize("round_", ROUNDS)
def test_refuse(net, round_):
    d, proxy, sb = net
    n = lines_for(REFUSE_SECS + 2)
    with Cell("refuse") as cell:
        reader = start_lines(sb, n)
        proxy.refuse()
        proxy.reset()
        resets_counted(proxy, 1)
        time.sleep(REFUSE_SECS)  # the fault's length
        back = proxy.restore()
        st = proxy.stats()
        assert st["refused"] >= 1, "the client did not try while refused: %s" % st
        cell.notes.append("%d connections refused" % st["refused"])
        cell.reconnected(*reconnect_ms(proxy, reader, back, back))
        finish_lines(cell, reader, n)


@pytest.mark.parametrize("round_", ROUNDS)
def test_repeated(net, round_):
    d, proxy, sb = net
    n = lines_for(5)
    with Cell("repeated") as cell:
        reader = start_lines(sb, n)
        for i in range(3):
            t = time.monotonic()
            before = proxy.stats()["resets"]
            proxy.reset()
            back = proxy.restore()
            resets_counted(proxy, before + 1)
            cell.reconnected(*reconnect_ms(proxy, reader, back, back))
            if i < 2:
                # The next reset a second after this one (the schedule of
                # the fault, not a wait for an event).
                time.sleep(max(0.0, t + 1 - time.monotonic()))
        finish_lines(cell, reader, n)


@pytest.mark.parametrize("round_", ROUNDS)
def test_restart(net, round_):
    d, proxy, sb = net
    n = lines_for(2)
    with Cell("restart") as cell:
        reader = start_lines(sb, n)
        # Not a proxy fault: the restore only marks the moment, so that the
        # proxy tells the first byte of a connection made after it.
        armed = proxy.restore()
        up = d.restart()
        lines = d.wait_lines(up)
        assert lines[-1] == lines[0], "the same address after the restart: %r" % lines
        assert d.proc.poll() is None, "the daemon process lives on"
        back = d.times[up - 1]
        cell.reconnected(*reconnect_ms(proxy, reader, armed, back))
        finish_lines(cell, reader, n)


# Input sent this long after the new connection's handshake must arrive:
# the client binds its new socket as the handshake completes, and input
# sent before that is dropped on its side.
BIND_MARGIN = 0.02
# Input sent this long before the reset has reached the daemon: loopback,
# and far less than the dialect's stdin window (4 MiB) is ever queued, so
# nothing holds it back in TCP.
DELIVERED = 0.1
# A line-reading loop slower than the typist (about 80 lines/s against
# 200), with 4 KiB lines: input queues up in the daemon beyond the pipe's
# 64 KiB, as keystrokes do behind a busy program. It echoes each line's
# first word.
SLOW_READER = 'while IFS= read -r l; do echo "${l%% *}"; sleep 0.01; done'
PAD = "." * 4096


@pytest.mark.parametrize("round_", ROUNDS)
def test_typing(net, round_):
    # Numbered input lines, one every 5 ms from a typist thread; the proxy
    # resets the connection in the middle of it.
    d, proxy, sb = net
    with Cell("typing") as cell:
        h = sb.run(SLOW_READER, wait=False, close_input=False, timeout=120)
        reader = Reader(h)
        sent = []  # (time called, number) of every send_input that returned
        raised = []  # numbers whose send_input raised (a dead socket)
        stop = threading.Event()
        typed = threading.Condition()
        typist_error = []

        def typist():
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    try:
                        t_send = time.monotonic()
                        h.send_input("in-%d %s\n" % (i, PAD))
                        with typed:
                            sent.append((t_send, i))
                            typed.notify_all()
                    except Exception:  # the client's send on a closing socket
                        raised.append(i)
                    stop.wait(0.005)  # typing speed
            except BaseException as e:
                typist_error.append(e)

        def wait_typed(pred, what):
            with typed:
                assert typed.wait_for(lambda: pred(sent), WAIT), "the typist did not get to %s" % what

        t = threading.Thread(target=typist, daemon=True)
        t.start()
        try:
            wait_typed(lambda s: len(s) >= 100, "line 100")
            t_reset = time.monotonic()
            proxy.reset()
            back = proxy.restore()
            resets_counted(proxy, 1)
            cell.reconnected(*reconnect_ms(proxy, reader, back, back))
            bound = back + proxy.stats()["reconnected_ms"] / 1000 + BIND_MARGIN
            wait_typed(lambda s: sum(1 for tk, _ in s if tk > bound) >= 20, "20 lines after the reconnect")
        finally:
            stop.set()
            t.join(timeout=5)
        assert not t.is_alive() and not typist_error, typist_error
        # Stdin closes after the last line (the client sends in order):
        # the loop reads to the end and exits 0.
        h.close_input()
        result = reader.join(timeout=WAIT + len(sent) / 20)
        assert result.exit_code == 0, result.exit_code
        assert reader.partial == "" and not reader.stderr, (reader.partial, reader.stderr)

        got = reader.texts()
        nums = [int(g.removeprefix("in-")) for g in got]
        assert got == ["in-%d" % k for k in nums], "not the input: %r" % [g for g in got if not g.startswith("in-")][:5]
        assert all(a < b for a, b in zip(nums, nums[1:])), \
            "input duplicated or out of order: %r" % [(a, b) for a, b in zip(nums, nums[1:]) if a >= b][:5]
        echoed = set(nums)
        # Input sent well before the reset had reached the daemon: all of it.
        before = [k for tk, k in sent if tk < t_reset - DELIVERED]
        lost_before = [k for k in before if k not in echoed]
        # Input sent once the client's new socket was up: all of it (the
        # dialect holds input that comes before it has handled `reconnect`).
        after = [k for tk, k in sent if tk > bound]
        lost_after = [k for k in after if k not in echoed]
        # The rest was typed in the last moments before the reset (in
        # flight through the proxy at the RST), while the client had no
        # socket (dropped on its side), or during its handshake.
        between = [k for tk, k in sent if t_reset - DELIVERED <= tk <= bound]
        cell.notes.insert(0, "%d input lines of 4 KiB typed, %d echoed once each and in order; "
                             "sent before the fault: %d of %d arrived; sent after the reconnect: %d of %d; "
                             "typed around the fault and during the outage: %d of %d arrived (%d more raised "
                             "in send_input): the client drops input while its socket is down and cannot "
                             "resume it, its own limit; exit 0"
                          % (sent[-1][1], len(nums), len(before) - len(lost_before), len(before),
                             len(after) - len(lost_after), len(after), len(echoed & set(between)),
                             len(between), len(raised)))
        assert not lost_before, "input sent before the fault lost: %d lines, in-%d .. in-%d" % (
            len(lost_before), lost_before[0], lost_before[-1])
        assert not lost_after, "input sent after the reconnect lost: %d lines, in-%d .. in-%d" % (
            len(lost_after), lost_after[0], lost_after[-1])
