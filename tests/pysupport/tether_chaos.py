"""The chaos matrix's shared parts for the Python suites (the LangSmith
client's cells in tests/compat, the Python SDK's in sdk/python/tests): a
daemon with a short keepalive (--peer-timeout 3 --ping-interval 1), a
reader that time-stamps lines, the reconnect time, the checks, the record
each cell appends to $CHAOS_RESULTS (printed by scripts/chaos-table.py), and
the five cells every client shares:

- `reset`: every open connection reset (RST) once;
- `freeze`: nothing passes either way, nothing closes, for the daemon's
  peer timeout + 1 s;
- `refuse`: open connections reset and new ones refused for 3 s;
- `repeated`: three resets about 1 s apart;
- `restart`: `kill -USR2` of the daemon while the output streams.

Each reads numbered lines through a handle, checks that the client
delivered every line once and in order and that the command lived on to
exit 0, and measures the reconnect time: from the network's return (the
proxy's `restore`, or the restarted daemon's listening line) to the first
line the client delivers over a connection made after it. CHAOS_ROUNDS=N
runs every cell N times."""
import contextlib
import json
import os
import threading
import time

from tether_testing import TimedDaemon

# The chaos daemon's keepalive: a silent peer is dropped after 3 s.
CHAOS_PEER_TIMEOUT = 3


@contextlib.contextmanager
def chaos_daemon():
    """A daemon of the test's own (a cell may restart it) with a short
    keepalive, its lines time-stamped."""
    with TimedDaemon("--peer-timeout", str(CHAOS_PEER_TIMEOUT), "--ping-interval", "1") as d:
        yield d


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
    stdout line was delivered (time.monotonic). `text(chunk)` gives a
    chunk's (stream, text) (the default reads LangSmith's chunks; it may
    raise, e.g. on a gap, which fails the cell)."""

    def __init__(self, handle, text=lambda chunk: (chunk.stream, chunk.data)):
        self.h = handle
        self.text = text
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
                stream, data = self.text(chunk)
                with self.cv:
                    if stream != "stdout":
                        self.stderr.append(data)
                        continue
                    partial += data
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


def record(client, fault, ok, ms, detail):
    line = json.dumps({"client": client, "fault": fault, "pass": ok,
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

    def __init__(self, client, fault):
        self.client = client
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
            record(self.client, self.fault, True, self.ms, "%s; %s" % (notes, took))
        else:
            why = ("%s: %s" % (kind.__name__, exc)).replace("\n", " ")[:600]
            record(self.client, self.fault, False, self.ms, "%s [%s; %s]" % (why, notes, took))
        return False


def finish_lines(cell, reader, n):
    """The reader got line-1 .. line-n once each and in order, and the
    command exited 0 (`result.exit_code`)."""
    result = reader.join(timeout=WAIT + n / 100)
    check_lines(reader, n)
    assert result.exit_code == 0, result.exit_code
    cell.notes.insert(0, "%d lines once each and in order, exit 0" % n)


# The five cells every client shares (`typing` is each client's own): each
# takes the client's name, the daemon and proxy, and `start(n)`, which
# starts `lines_cmd(n)` through the client and returns a Reader that has
# delivered BEFORE lines.

def reset_cell(client, d, proxy, start):
    n = lines_for(2)
    with Cell(client, "reset") as cell:
        reader = start(n)
        proxy.reset()
        back = proxy.restore()  # marks the moment: the network is back at once
        resets_counted(proxy, 1)
        cell.reconnected(*reconnect_ms(proxy, reader, back, back))
        finish_lines(cell, reader, n)


def freeze_cell(client, d, proxy, start):
    n = lines_for(FREEZE_SECS + 2)
    with Cell(client, "freeze") as cell:
        reader = start(n)
        accepted = proxy.stats()["accepted"]
        proxy.freeze()
        time.sleep(FREEZE_SECS)  # the fault's length, longer than the daemon's peer timeout
        back = proxy.restore()
        cell.reconnected(*reconnect_ms(proxy, reader, back, back))
        # A new connection: the daemon dropped the silent peer (and a
        # client with a short keepalive noticed the silence itself).
        st = proxy.stats()
        assert st["accepted"] > accepted, st
        cell.notes.append("frozen %d s, the silent connection was dropped" % FREEZE_SECS)
        finish_lines(cell, reader, n)


def refuse_cell(client, d, proxy, start):
    n = lines_for(REFUSE_SECS + 2)
    with Cell(client, "refuse") as cell:
        reader = start(n)
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


def repeated_cell(client, d, proxy, start):
    n = lines_for(5)
    with Cell(client, "repeated") as cell:
        reader = start(n)
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


def restart_cell(client, d, proxy, start):
    n = lines_for(2)
    with Cell(client, "restart") as cell:
        reader = start(n)
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


# For the `typing` cells: a line-reading loop slower than the typist (about
# 80 lines/s against 200), with 4 KiB lines: input queues up in the daemon
# beyond the pipe's 64 KiB, as keystrokes do behind a busy program. It
# echoes each line's first word.
SLOW_READER = 'while IFS= read -r l; do echo "${l%% *}"; sleep 0.01; done'
PAD = "." * 4096


CELLS = {"reset": reset_cell, "freeze": freeze_cell, "refuse": refuse_cell, "repeated": repeated_cell,
         "restart": restart_cell}
"""The shared cells by fault."""
