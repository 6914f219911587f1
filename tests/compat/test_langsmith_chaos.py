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

The shared cells and their machinery are in tests/pysupport/tether_chaos.py.
Each cell appends a JSON line to $CHAOS_RESULTS if set (printed by
scripts/chaos-table.py); CHAOS_ROUNDS=N runs every cell N times."""
import threading
import time

import pytest

from conftest import FaultProxy, sandbox
from tether_chaos import (
    BEFORE, CELLS, PAD, ROUNDS, SLOW_READER, WAIT, Cell, Reader, lines_cmd, reconnect_ms, resets_counted,
)


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


@pytest.mark.parametrize("round_", ROUNDS)
@pytest.mark.parametrize("fault", sorted(CELLS))
def test_shared_cell(net, fault, round_):
    d, proxy, sb = net
    CELLS[fault]("langsmith", d, proxy, lambda n: start_lines(sb, n))


# Input sent this long after the new connection's handshake must arrive:
# the client binds its new socket as the handshake completes, and input
# sent before that is dropped on its side.
BIND_MARGIN = 0.02
# Input sent this long before the reset has reached the daemon: loopback,
# and far less than the dialect's stdin window (4 MiB) is ever queued, so
# nothing holds it back in TCP.
DELIVERED = 0.1


@pytest.mark.parametrize("round_", ROUNDS)
def test_typing(net, round_):
    # Numbered input lines, one every 5 ms from a typist thread; the proxy
    # resets the connection in the middle of it.
    d, proxy, sb = net
    with Cell("langsmith", "typing") as cell:
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
