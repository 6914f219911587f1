"""Soak (issue #19): a bounded churn against one real tether daemon, then
its resources back to where they started.

Many clients (each its own `tether.AsyncClient`, half of them through the
chaos matrix's fault proxy, which resets, refuses and freezes their
connections every few seconds) run a random mix of operations for the
duration: short one-shot execs, long streams checked byte for byte
(numbered lines on stdout and stderr, every chunk at the offset expected,
no gap, nothing doubled), detached commands collected later by attach,
wait or logs, stdin (cat, sha256sum), popen, PTYs (type, read the echo,
resize, `stty size`, the screen size, exit with a code), named shells
(state carried between commands, history, close), signals, kills of
process trees (every process gone afterwards), removals of running
commands, wall-clock and idle timeouts, TTL expiry, files and code runs.
Every operation checks its result. Meanwhile the daemon is restarted in
place (SIGUSR2) every `--restart-every` seconds; the clients ride through.

The restarts stop for the last stretch of the run (a third of it, and at
least one restart interval): a restart re-executes the binary, which would
wipe a leak of memory or of close-on-exec fds, so the end figures come from
one daemon image that has run under load for that long.

Figures of the daemon process (read from /proc): open fds
(/proc/PID/fd), threads (Threads in /proc/PID/status), live children
(PPid = the daemon; it is a subreaper, so orphans count too), all
descendants, zombies among them, and RSS (VmRSS). A baseline is taken
after a warm-up (one operation of each kind, then everything idle), the
figures are sampled every second during the run (min/max), and at the end,
once the clients have stopped, their commands are removed or expired and
their shells closed, the figures are polled (for at most 90 s) until they
are back within these tolerances:

- fds: at most baseline + 2. An idle daemon holds a fixed set (listener,
  epoll, signal pipes, log and stdio); a restart may re-create a couple of
  them in a different number, nothing more. A leak of one fd per command
  or per connection over thousands of them shows as hundreds.
- threads: at most baseline + 2. Two tokio workers and the main thread
  are fixed; tokio's blocking pool threads (spawn_blocking: file routes,
  waits) exit after 10 s idle, so the count is polled until they have
  gone; +2 allows for one still finishing its keep-alive.
- children, descendants and zombies: 0. Every command, shell, PTY and
  whatever they started has been removed or has ended, so anything left
  is a process the daemon failed to kill or reap.
- RSS: at most baseline + max(32 MiB, 50 %). glibc's malloc keeps freed
  memory in its per-thread arenas, up to about the high-water mark of what
  was live at once: here ~20-25 MiB of rings, windows and buffers for ten
  busy clients. Measured with the debug build, the idle heap (RssAnon)
  after the load stays 14-19 MiB above its baseline (runs of 60, 120 and
  240 s: +14, +15, +19 MiB; it does not grow with the work in proportion),
  so 16 MiB would fail on retention alone. A leak per command or per
  connection (thousands of each in ten minutes, tens of thousands in an
  hours-long run) passes 32 MiB. RssAnon is printed next to it.
- commands and shells held at the end: 0 (after the TTL'd ones expired
  and the leftovers of interrupted operations were removed; those
  leftovers are reported).

Failures: any check of an operation that fails, any error that is not one
the disruption explains, an operation past its time limit (a hang), a
restart that does not come back, or a tolerance above. The tolerated
errors are counted by kind and printed: `ConnectionLost` from a request
the SDK does not repeat (a signal, an HTTP file or code request) when a
fault or restart hit that client during the operation, or was under way
when it began (a file PUT through the proxy while it refuses), or a
restart ended less than 2 s before it began (a pooled connection the
restart closed),
`ShuttingDown` (the
documented 503 answer) from such a request in flight when a restart
happened during the operation (or was under way when it began: the daemon
answers 503 until it has handed over), and a named shell
closed by a restart while it ran a command (the daemon closes busy shells
at a restart, by design).

Usage: python tests/soak/soak.py [--seconds N] [--clients N]
[--restart-every S] [--seed N] [--ops pty,shell]; `--seconds` defaults to $SOAK_SECONDS, else
600 (the CI budget). TETHER_BIN and TETHER_FAULTPROXY name the binaries
(scripts/soak.sh builds them). Exits 0 when everything passed, 1 if not.
"""

import argparse
import asyncio
import collections
import gc
import hashlib
import inspect
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "pysupport"))

# Importing it gives the daemon and its commands a HOME of their own.
from tether_testing import Daemon, FaultProxy  # noqa: E402

import tether  # noqa: E402

# Clients reconnect fast and for long: a restart is milliseconds, a fault
# at most a few seconds.
OPTIONS = tether.Options(backoff_initial=0.02, backoff_max=0.5, reconnect_for=60)
# Longest one operation may take (the longest stream lasts ~20 s, plus a
# restart and some refusals); past it, a hang.
OP_LIMIT = 180.0
# Longest a stream may stay silent before it counts as a hang.
EVENT_LIMIT = 60.0
# How long after a restart a lost connection may still be its doing: a
# pooled connection it closed, first used by the next operation.
RESTART_AFTERMATH = 2.0
# TTL of the commands left to expire.
EXPIRE_TTL = 10.0

PAD = b"x" * 40
GEN = (
    "import sys, time\n"
    "n, batch, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])\n"
    "o, e = sys.stdout.buffer, sys.stderr.buffer\n"
    "pad = b'x' * 40\n"
    "for i in range(n):\n"
    "    o.write(b'o%08d %s\\n' % (i, pad))\n"
    "    if i % 10 == 0:\n"
    "        e.write(b'e%08d\\n' % i)\n"
    "    if (i + 1) % batch == 0:\n"
    "        o.flush(); e.flush(); time.sleep(delay)\n"
    "o.flush(); e.flush()\n"
)


def gen_argv(n, batch, delay):
    return ["python3", "-c", GEN, str(n), str(batch), "%.4f" % delay]


def gen_expected(n):
    out = b"".join(b"o%08d %s\n" % (i, PAD) for i in range(n))
    err = b"".join(b"e%08d\n" % i for i in range(0, n, 10))
    return out, err


class Failure(Exception):
    """A correctness failure: a check of an operation did not hold."""


class Tolerated(Exception):
    """An error the disruption explains (counted, not a failure)."""


def awaiting(task):
    """Where a task waits: its await chain as `function:line` from the
    outermost (with what a `read_until` waits for and the output it has),
    and the first command id (an object's `command_id`) held by one of
    those frames."""
    where, cid = [], None
    aw = task.get_coro()
    for _ in range(64):
        frame = getattr(aw, "cr_frame", None) or getattr(aw, "ag_frame", None) or getattr(aw, "gi_frame", None)
        if frame is None and aw is not None:
            # An async generator's `asend` (an `async for` step) shows its
            # generator only to the garbage collector.
            inner = [r for r in gc.get_referents(aw) if inspect.isasyncgen(r) or inspect.iscoroutine(r)]
            if inner:
                aw = inner[0]
                continue
        if frame is None:
            if aw is not None:
                where.append(type(aw).__name__)
            break
        where.append("%s:%d" % (frame.f_code.co_name, frame.f_lineno))
        local = frame.f_locals
        if "want" in local and isinstance(local.get("buf"), (bytes, bytearray)):
            where[-1] += " (for %r, last output %r)" % (local["want"], bytes(local["buf"][-160:]))
        for v in local.values():
            if cid is None and isinstance(getattr(v, "command_id", None), str):
                cid = v.command_id
        aw = getattr(aw, "cr_await", None) or getattr(aw, "ag_await", None) or getattr(aw, "gi_yieldfrom", None)
    return " > ".join(where), cid


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# ------------------------------------------------------------------ /proc


def proc_table():
    """{pid: (ppid, state, comm)} of every process."""
    tab = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                s = f.read()
        except OSError:
            continue
        close = s.rindex(")")
        rest = s[close + 2 :].split()
        tab[int(name)] = (int(rest[1]), rest[0], s[s.index("(") + 1 : close])
    return tab


def descendants(pid, tab):
    kids = collections.defaultdict(list)
    for p, (pp, _, _) in tab.items():
        kids[pp].append(p)
    out, todo = [], list(kids.get(pid, ()))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def figures(pid):
    """The daemon's figures now, or None while it is inside its exec."""
    try:
        fds = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/status" % pid) as f:
            status = f.read()
    except OSError:
        return None
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    anon = re.search(r"^RssAnon:\s+(\d+) kB", status, re.M)
    if m is None or anon is None:
        return None
    tab = proc_table()
    desc = descendants(pid, tab)
    return {
        "fds": fds,
        "threads": threads,
        "children": sum(1 for p in desc if tab[p][0] == pid),
        "descendants": len(desc),
        "zombies": sum(1 for p in desc if tab[p][1] == "Z"),
        "rss_kib": int(m.group(1)),
        "rss_anon_kib": int(anon.group(1)),
    }


def fd_links(pid):
    out = {}
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for n in names:
        try:
            out[int(n)] = os.readlink("/proc/%d/fd/%s" % (pid, n))
        except OSError:
            pass
    return out


def fd_kind(link):
    return re.sub(r"\[\d+\]$", "[*]", link) if re.match(r"^(socket|pipe|anon_inode):", link) else link


def thread_names(pid):
    names = collections.Counter()
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return names
    for t in tids:
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                names[f.read().strip()] += 1
        except OSError:
            pass
    return names


def pid_gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return True, None
    return False, s[s.rindex(")") + 2 :].split()[0]


async def wait_pids_gone(pids, limit=10.0):
    """Every pid gone (reaped) within `limit`, polled."""
    deadline = time.monotonic() + limit
    while True:
        left = [(p, st) for p in pids for gone, st in [pid_gone(p)] if not gone]
        if not left:
            return
        if time.monotonic() > deadline:
            raise Failure("processes still there %gs after their command ended: %s" % (
                limit, ", ".join("%d (state %s, %s)" % (p, st, cmdline(p)) for p, st in left)))
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ the run


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.stop = False
        self.ops = collections.Counter()
        self.tolerated = collections.Counter()
        self.failed = collections.Counter()
        self.failures = []
        self.bytes_verified = 0
        self.restarts = 0
        # When the last restart was done (monotonic), or None.
        self.restarted_at = None
        self.restart_ms = []
        # Bumped before each SIGUSR2 and again once the daemon listens
        # again: an operation that overlaps any part of a restart (also one
        # that began while it was under way) sees it change.
        self.restart_epoch = 0
        self.fault_epoch = 0  # bumped before each fault
        self.faults = collections.Counter()
        self.expiring = collections.deque()  # (command id, client index, when its TTL ends)
        self.samples = collections.defaultdict(lambda: [None, None])
        self.workdir = tempfile.mkdtemp(prefix="tether-soak-")
        self.seq = 0

    def fail(self, what, msg):
        self.failed[what] += 1
        if len(self.failures) < 40:
            self.failures.append("%s: %s" % (what, msg))
        print("FAIL %s: %s" % (what, msg), flush=True)

    def sample(self, fig):
        for k, v in fig.items():
            lo, hi = self.samples[k]
            self.samples[k] = [v if lo is None else min(lo, v), v if hi is None else max(hi, v)]

    def tok(self):
        self.seq += 1
        return "%d-%d" % (self.seq, self.rng.randrange(1 << 30))

    # ------------------------------------------------------- operations
    # Each takes the worker (`w`: its client, whether it goes through the
    # proxy, its own random generator) and raises Failure on a wrong result.

    async def events(self, h):
        """A handle's events, each within EVENT_LIMIT."""
        while True:
            try:
                ev = await asyncio.wait_for(h.__anext__(), EVENT_LIMIT)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise Failure("no event from %s for %gs" % (h.command_id, EVENT_LIMIT)) from None
            yield ev

    async def read_until(self, h, want, buf):
        """Reads a handle's output (and screens) until `want` shows; returns
        what came up to it (`buf` keeps the rest, which may hold what the
        next call waits for)."""

        def take():
            cut = buf.index(want) + len(want)
            seen = bytes(buf[:cut])
            del buf[:cut]
            return seen

        if want in buf:
            return take()
        progress = time.monotonic()
        try:
            async for ev in self.events(h):
                if isinstance(ev, (tether.OutputEvent, tether.ScreenEvent)):
                    progress = time.monotonic()
                    buf += ev.data
                    if want in buf:
                        return take()
                elif time.monotonic() - progress > EVENT_LIMIT:
                    # Other events (a re-attachment's `resized` after each
                    # reconnect) are no progress.
                    raise Failure("no output from %s for %gs" % (h.command_id, EVENT_LIMIT))
        except Failure as e:
            raise Failure("%s, waiting for %r (last output %r)" % (e, want, bytes(buf[-120:]))) from None
        raise Failure("%s ended before %r showed (last output %r)" % (h.command_id, want, bytes(buf[-200:])))

    def verify(self, what, ev, want, got):
        """One event of a numbered stream: at the expected offset, the
        expected bytes."""
        if isinstance(ev, tether.GapEvent):
            raise Failure("%s: gap %s [%d, %d)" % (what, ev.stream, ev.start, ev.end))
        if not isinstance(ev, tether.OutputEvent):
            return
        at = got[ev.stream]
        if ev.offset != at:
            raise Failure("%s: %s chunk at offset %d, expected %d" % (what, ev.stream, ev.offset, at))
        exp = want[ev.stream][at : at + len(ev.data)]
        if ev.data != exp:
            i = first_diff(ev.data, exp)
            raise Failure("%s: %s differs at offset %d: got %r, want %r" % (
                what, ev.stream, at + i, ev.data[i : i + 24], exp[i : i + 24]))
        got[ev.stream] = at + len(ev.data)

    async def op_exec(self, w):
        c, t = w.client, self.tok()
        v = w.rng.randrange(3)
        if v == 0:
            r = await c.exec(["echo", t], labels={"soak": "exec"})
            check((r.exit_code, r.stdout) == (0, (t + "\n").encode()), "echo: %r" % (r,))
        elif v == 1:
            code = w.rng.randrange(0, 100)
            r = await c.exec("echo o%s; echo e%s >&2; exit %d" % (t, t, code), labels={"soak": "exec"})
            check((r.exit_code, r.stdout, r.stderr) == (code, b"o%s\n" % t.encode(), b"e%s\n" % t.encode()),
                  "exit %d: %r" % (code, r))
        else:
            try:
                r = await c.exec(["/no/such/program-" + t])
                check(r.exit_code == 127, "a missing program: %r" % (r,))
            except tether.SpawnError:
                pass

    async def op_stream(self, w):
        c = w.client
        n = w.rng.randrange(2000, 80000)
        batch = w.rng.randrange(100, 2000)
        delay = w.rng.uniform(0.3, 18.0) / max(1, n // batch)
        out, err = gen_expected(n)
        want, got = {"stdout": out, "stderr": err}, {"stdout": 0, "stderr": 0}
        h = await c.run(gen_argv(n, batch, delay), wait=False, capture=False, labels={"soak": "stream"})
        slow = w.rng.random() < 0.2
        try:
            async for ev in self.events(h):
                self.verify("stream %s" % h.command_id, ev, want, got)
                if slow:
                    await asyncio.sleep(0.002)
            r = await h.wait(EVENT_LIMIT)
            check(r.exit_code == 0 and r.lost_bytes == 0, "stream %s: %r" % (h.command_id, r))
            check(got["stdout"] == len(out) and got["stderr"] == len(err),
                  "stream %s ended at %r of %d/%d" % (h.command_id, got, len(out), len(err)))
            self.bytes_verified += len(out) + len(err)
        finally:
            await self.forget(c, h.command_id)

    async def op_attach(self, w):
        """A detached command collected later: attach (paced or not),
        the lazy handle's wait, or logs. Its output stays below the ring
        (1 MiB), so even an unpaced reader loses nothing: below it as the
        ring counts it, which is each read chunk plus 64 bytes. With
        PYTHONUNBUFFERED in the environment every 51-byte line is a write
        of its own, and the daemon, draining as lines come, may store each
        as a chunk: 8000 lines cost at most 920 KB. (15000, as before, cost
        up to 1.7 MB and lost the first lines once drains got prompter.)"""
        c = w.client
        n = w.rng.randrange(500, 8000)
        batch = w.rng.randrange(50, 1000)
        delay = w.rng.uniform(0.1, 5.0) / max(1, n // batch)
        out, err = gen_expected(n)
        d = await c.exec_detached(gen_argv(n, batch, delay), labels={"soak": "attach"})
        cid = d.command_id
        try:
            how = w.rng.choice(["attach", "attach-paced", "attach-late", "wait", "logs"])
            if how == "attach-late":
                await self.until_ended(c, cid, 60)
            if how.startswith("attach"):
                h = await c.attach(cid, pace=how == "attach-paced", capture=False)
                want, got = {"stdout": out, "stderr": err}, {"stdout": 0, "stderr": 0}
                async for ev in self.events(h):
                    self.verify("attach %s (%s)" % (cid, how), ev, want, got)
                r = await h.wait(EVENT_LIMIT)
                check(got == {"stdout": len(out), "stderr": len(err)}, "attach %s ended at %r" % (cid, got))
            elif how == "wait":
                r = await d.wait(EVENT_LIMIT)
                check(r.stdout == out and r.stderr == err,
                      "wait %s: stdout %d of %d bytes, first difference at %d" % (
                          cid, len(r.stdout), len(out), first_diff(r.stdout, out)))
            else:
                chunks = []

                async def read():
                    async for chunk in c.logs(cid, follow=True, stream="stdout"):
                        chunks.append(chunk)

                await asyncio.wait_for(read(), EVENT_LIMIT)
                got_out = b"".join(chunks)
                check(got_out == out, "logs %s: %d of %d bytes, first difference at %d" % (
                    cid, len(got_out), len(out), first_diff(got_out, out)))
                r = None
            info = await c.status(cid)
            check(info.exit is not None and info.exit.code == 0, "attach %s: %r" % (cid, info.exit))
            check(r is None or (r.exit_code == 0 and r.lost_bytes == 0), "attach %s: %r" % (cid, r))
            self.bytes_verified += len(out) + (0 if how == "logs" else len(err))
        finally:
            await self.forget(c, cid)

    async def op_stdin(self, w):
        c = w.client
        data = os.urandom(w.rng.randrange(1, 3 << 20))
        if len(data) <= 1 << 20:
            r = await c.exec(["cat"], stdin=data, labels={"soak": "stdin"})
            check(r.exit_code == 0 and r.stdout == data, "cat of %d bytes: %d back, first difference at %d" % (
                len(data), len(r.stdout), first_diff(r.stdout, data)))
            self.bytes_verified += 2 * len(data)
        else:
            r = await c.exec(["sha256sum"], stdin=data, labels={"soak": "stdin"})
            want = hashlib.sha256(data).hexdigest()
            check(r.exit_code == 0 and r.stdout.decode().split()[0] == want,
                  "sha256sum of %d bytes: %r" % (len(data), r.stdout[:80]))
            self.bytes_verified += len(data)

    async def op_popen(self, w):
        lines = ["%08d" % w.rng.randrange(10**8) for _ in range(w.rng.randrange(1, 5000))]
        p = await w.client.popen(["sort"], stdin=tether.PIPE, stdout=tether.PIPE, text=True)
        try:
            out, _ = await p.communicate("".join(x + "\n" for x in lines), timeout=EVENT_LIMIT)
        except BaseException:
            await self.forget(w.client, p.command_id)
            raise
        check(out == "".join(x + "\n" for x in sorted(lines)), "sort: %d lines back" % out.count("\n"))
        check(p.returncode == 0, "sort exited %r" % p.returncode)
        await self.forget(w.client, p.command_id)

    async def op_pty(self, w):
        c = w.client
        # The prompt numbers the lines bash reads (`\#` in PS1).
        t = await c.pty(["bash", "--norc", "--noprofile"], size=(24, 80), ttl=60, env={"PS1": "soak-\\#$ "})
        buf = bytearray()
        try:
            tok = self.tok().replace("-", "")
            await t.write("printf 'm%%sk\\n' %s\n" % tok)
            await self.read_until(t, ("m%sk" % tok).encode(), buf)
            # Resize once bash waits at its next prompt: as readline starts
            # a line it reads the window size and writes it back (rltty.c
            # `set_winsize`), which undoes a resize landing in between, and
            # the prompt comes after that.
            await self.read_until(t, b"soak-2$ ", buf)
            rows, cols = w.rng.randrange(10, 60), w.rng.randrange(40, 200)
            await t.resize(rows, cols)
            await t.write("stty size\n")
            await self.read_until(t, ("%d %d" % (rows, cols)).encode(), buf)
            if w.rng.random() < 0.3:
                size = await asyncio.wait_for(t.screen_size(), EVENT_LIMIT)
                check(size == (rows, cols), "pty %s: screen size %r, resized to %r" % (
                    t.command_id, size, (rows, cols)))
            code = w.rng.randrange(0, 10)
            await t.write("exit %d\n" % code)
            r = await t.wait(EVENT_LIMIT)
            check(r.exit_code == code and r.reason == "exited", "pty %s: %r, want exit %d" % (
                t.command_id, r, code))
        finally:
            await self.forget(c, t.command_id)

    async def op_shell(self, w):
        c = w.client
        name = "soak-%s" % self.tok()
        sub = os.path.join(self.workdir, name)
        os.makedirs(sub)
        sh = await c.shell(name, cwd=self.workdir)
        try:
            tok = self.tok()
            r = await sh.exec("cd %s && export SOAK_V=%s && N=0 && f() { echo f-$1-$SOAK_V; }" % (name, tok),
                              labels={"soak": "shell"})
            self.shell_result(sh, r, 0)
            k, n = w.rng.randrange(2, 8), 0
            for i in range(k):
                if w.rng.random() < 0.2:
                    r = await sh.exec("false", labels={"soak": "shell"})
                    self.shell_result(sh, r, 1)
                    continue
                r = await sh.exec("N=$((N+1)); echo $N $PWD; f %d" % i, labels={"soak": "shell"})
                self.shell_result(sh, r, 0)
                n += 1
                check(r.stdout == ("%d %s\nf-%d-%s\n" % (n, sub, i, tok)).encode(),
                      "shell %s lost its state: %r" % (name, r.stdout))
            hist = await sh.history()
            check(len(hist) == k + 1, "shell %s: history of %d, want %d" % (name, len(hist), k + 1))
            await sh.close()
            names = [s.name for s in await c.shells() if s.state != "closed"]
            check(name not in names, "shell %s still listed after close" % name)
        except tether.ShellClosed:
            raise Tolerated("shell_closed") from None
        finally:
            try:
                await sh.close()
            except tether.TetherError:
                pass
            shutil.rmtree(sub, ignore_errors=True)

    def shell_result(self, sh, r, code):
        if r.reason == "shell_closed":
            raise Tolerated("shell_closed")
        check(r.exit_code == code, "shell %s: %r, want exit %d" % (sh.name, r, code))

    async def op_kill(self, w):
        c = w.client
        v = w.rng.choice(["term", "int", "tree", "tree-by-id"])
        if v == "term":
            h = await c.run("trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
                            wait=False, labels={"soak": "kill"})
        elif v == "int":
            h = await c.run(["bash", "-c", "echo ready; exec sleep 300"], wait=False, labels={"soak": "kill"})
        else:
            h = await c.run("sleep 300 & echo c$!; sleep 300 & echo c$!; echo ready; wait",
                            wait=False, labels={"soak": "kill"})
        try:
            seen = await self.read_until(h, b"ready\n", bytearray())
            if v in ("term", "int"):
                await self.signal(w, h, "TERM" if v == "term" else "INT")
                r = await h.wait(EVENT_LIMIT)
                want = 42 if v == "term" else 130
                check(r.exit_code == want, "kill %s (%s): %r" % (h.command_id, v, r))
                if v == "term":
                    check(b"got-term" in r.output, "kill %s: the trap did not run: %r" % (h.command_id, r.output))
            else:
                # The tree: bash and two sleeps; after the kill every one is gone.
                r0 = await c.status(h.command_id)
                pids = [int(x) for x in re.findall(rb"c(\d+)", seen)]
                check(len(pids) == 2, "kill %s: no pids in %r" % (h.command_id, seen))
                if v == "tree":
                    await h.kill()
                else:
                    await c.kill(h.command_id)
                r = await h.wait(EVENT_LIMIT)
                check(r.reason == "killed" and r.signal == 9, "kill %s: %r" % (h.command_id, r))
                await wait_pids_gone(pids + [r0.pid])
        finally:
            await self.forget(c, h.command_id)

    async def signal(self, w, h, sig):
        """A signal (not repeated by the SDK after a drop): sent again while
        the command runs, if a fault or restart lost it."""
        for _ in range(5):
            before = w.epoch()
            try:
                await h.signal(sig)
                return
            except tether.ConnectionLost:
                if w.epoch() == before:
                    raise
                self.tolerated["signal lost in a cut"] += 1
                info = await w.client.status(h.command_id)
                if info.exit is not None:
                    return
        raise Failure("signal %s to %s lost five times" % (sig, h.command_id))

    async def op_remove(self, w):
        c = w.client
        d = await c.exec_detached(["sleep", "300"], labels={"soak": "remove"})
        await c.remove(d.command_id)
        try:
            await c.status(d.command_id)
            raise Failure("removed %s is still there" % d.command_id)
        except tether.CommandNotFound:
            pass
        await wait_pids_gone([d.pid])

    async def op_timeout(self, w):
        r = await w.client.exec(["sleep", "30"], timeout=w.rng.uniform(0.1, 1.0), labels={"soak": "timeout"})
        check(r.reason == "timed_out" and r.exit_code == 143, "timeout: %r" % (r,))

    async def op_idle(self, w):
        c = w.client
        d = await c.exec_detached(["sleep", "300"], idle_timeout=0.5, labels={"soak": "idle"})
        try:
            info = await self.until_ended(c, d.command_id, 20)
            check(info.exit.reason == "idle_timeout", "idle %s: %r" % (d.command_id, info.exit))
            await wait_pids_gone([d.pid])
        finally:
            await self.forget(c, d.command_id)

    async def op_expire(self, w):
        """A command left to its TTL; one left earlier must be gone."""
        c, t = w.client, self.tok()
        d = await c.exec_detached(["echo", t], ttl=EXPIRE_TTL, labels={"soak": "expire"})
        r = await d.wait(EVENT_LIMIT)
        check(r.stdout == (t + "\n").encode() and r.exit_code == 0, "expire %s: %r" % (d.command_id, r))
        self.expiring.append((d.command_id, time.monotonic() + EXPIRE_TTL))
        # TTL counts from the exit; 10 s more than that for the sweep.
        if self.expiring and self.expiring[0][1] + 10 < time.monotonic():
            cid, _ = self.expiring.popleft()
            try:
                info = await c.status(cid)
                raise Failure("%s still held %gs after its TTL: %r" % (cid, 10, info))
            except tether.CommandNotFound:
                pass

    async def op_files(self, w):
        c = w.client
        path = os.path.join(self.workdir, "f-%s.bin" % self.tok())
        data = os.urandom(w.rng.randrange(0, 512 << 10))
        await c.files.write(path, data)
        got = await c.files.read(path)
        check(got == data, "file %s: %d bytes back of %d" % (path, len(got), len(data)))
        await c.files.remove(path)
        self.bytes_verified += 2 * len(data)

    async def op_code(self, w):
        a, b = w.rng.randrange(1000), w.rng.randrange(1000)
        r = await w.client.code_run("print(%d * %d)" % (a, b))
        check(r.exit_code == 0 and r.stdout == b"%d\n" % (a * b), "code: %r" % (r,))

    async def until_ended(self, c, cid, limit):
        deadline = time.monotonic() + limit
        while True:
            info = await c.status(cid)
            if info.exit is not None:
                return info
            if time.monotonic() > deadline:
                raise Failure("%s still running after %gs: %r" % (cid, limit, info))
            await asyncio.sleep(0.1)

    async def describe(self, msg):
        """The daemon's view of the command a failure names, asked on a
        connection of its own (bounded)."""
        m = re.search(r"\bc-[0-9a-f]+", msg)
        if m is None:
            return ""
        cid = m.group(0)
        try:
            async with tether.AsyncClient(self.direct_url, token=self.token, options=OPTIONS) as c:
                info = await asyncio.wait_for(c.status(cid), 10)
            return "; daemon: state %s, attached %d, stdout end %d, exit %r" % (
                info.state, info.attached, info.stdout.end, info.exit)
        except (tether.TetherError, asyncio.TimeoutError) as e:
            return "; daemon status of %s: %r" % (cid, e)

    async def forget(self, c, cid):
        """Removes a command an operation is done with (a lost answer is
        fine: the end sweep removes what is left and reports it)."""
        try:
            await asyncio.wait_for(c.remove(cid), 30)
        except (tether.TetherError, asyncio.TimeoutError):
            pass

    OPS = {
        "exec": 20, "stream": 10, "attach": 10, "stdin": 6, "popen": 4, "pty": 8, "shell": 8,
        "kill": 8, "remove": 4, "timeout": 3, "idle": 2, "expire": 3, "files": 4, "code": 3,
    }

    # ------------------------------------------------------------ drivers

    async def run_op(self, w, kind):
        before = w.epoch()
        restarts_before, faults_before = self.restart_epoch, self.fault_epoch
        t0 = time.monotonic()
        op = asyncio.ensure_future(getattr(self, "op_" + kind)(w))
        try:
            try:
                done, _ = await asyncio.wait({op}, timeout=OP_LIMIT)
            except asyncio.CancelledError:
                # The worker is cancelled (the run ends): so is its operation.
                op.cancel()
                raise
            if not done:
                # Where it waits (the await chain, innermost last) and the
                # daemon's view of the command it works on, before it is
                # cancelled.
                where, cid = awaiting(op)
                op.cancel()
                await asyncio.gather(op, return_exceptions=True)
                self.fail(kind, "hung: not done within %gs (%s), waiting in %s%s" % (
                    OP_LIMIT, w, where, await self.describe(cid or "")))
                return
            await op
            self.ops[kind] += 1
        except Tolerated as e:
            if str(e) == "shell_closed" and self.restart_epoch == restarts_before and not restarts_before % 2:
                self.fail(kind, "a shell closed with no restart during the operation")
            else:
                self.tolerated["%s: %s" % (kind, e)] += 1
        except Failure as e:
            self.fail(kind, "%s [%s, op of %.1f s, restarts during it %d, faults %d%s]" % (
                e, w, time.monotonic() - t0,
                (self.restart_epoch - restarts_before + 1) // 2, (self.fault_epoch - faults_before + 1) // 2,
                await self.describe(str(e))))
        except tether.ConnectionLost as e:
            # An epoch is odd while its disruption lasts (bumped as it
            # begins and as it ends): an operation that began within one
            # (a file PUT while the proxy refuses) may be refused before
            # the epoch moves again.
            if w.epoch() != before or any(n % 2 for n in before):
                restart = self.restart_epoch != restarts_before or restarts_before % 2
                self.tolerated["%s: ConnectionLost in a %s" % (kind, "restart" if restart else "fault")] += 1
            elif self.restarted_at is not None and t0 - self.restarted_at < RESTART_AFTERMATH:
                # An HTTP request that began just after a restart, on a
                # pooled keep-alive connection the restart had closed (the
                # fault proxy passes the close on only when it is used).
                self.tolerated["%s: ConnectionLost just after a restart" % kind] += 1
            else:
                self.fail(kind, "ConnectionLost with no fault or restart: %s [%s]" % (e, w))
        except tether.ShuttingDown as e:
            # A one-shot HTTP request (a code run, a file) in flight when
            # the daemon restarts is answered 503 `shutting_down` by design
            # (PROTOCOL "HTTP status"): the request is not repeatable, so
            # like a ConnectionLost it is tolerated during a restart only.
            if self.restart_epoch != restarts_before or restarts_before % 2:
                self.tolerated["%s: ShuttingDown in a restart" % kind] += 1
            else:
                self.fail(kind, "ShuttingDown with no restart: %s" % e)
        except tether.TetherError as e:
            self.fail(kind, "%s: %s" % (type(e).__name__, e))
        except Exception as e:
            self.fail(kind, "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))

    async def worker(self, w, until):
        kinds = self.args.ops.split(",") if self.args.ops else list(self.OPS)
        weights = [self.OPS[k] for k in kinds]
        while not self.stop and time.monotonic() < until:
            await self.run_op(w, w.rng.choices(kinds, weights)[0])

    async def restarter(self, daemon, until):
        every = self.args.restart_every
        while True:
            await asyncio.sleep(every)
            if self.stop or time.monotonic() + 1 > until:
                return
            t0 = time.monotonic()
            self.restart_epoch += 1
            n = daemon.restart()
            try:
                await asyncio.to_thread(daemon.wait_lines, n, 30)
            except AssertionError:
                self.fail("restart", "the daemon did not listen again within 30 s")
                self.stop = True
                return
            self.restart_epoch += 1
            self.restarts += 1
            self.restarted_at = time.monotonic()
            self.restart_ms.append((time.monotonic() - t0) * 1000)
            print("restart %d: listening again after %.0f ms" % (self.restarts, self.restart_ms[-1]), flush=True)

    async def faulter(self, proxy):
        while not self.stop:
            await asyncio.sleep(self.rng.uniform(2.0, 8.0))
            if self.stop:
                return
            kind = self.rng.choices(["reset", "refuse", "freeze"], [6, 3, 1])[0]
            self.fault_epoch += 1
            self.faults[kind] += 1
            if kind == "reset":
                await asyncio.to_thread(proxy.reset)
            elif kind == "refuse":
                await asyncio.to_thread(proxy.refuse)
                await asyncio.to_thread(proxy.reset)
                await asyncio.sleep(self.rng.uniform(0.2, 2.0))
                await asyncio.to_thread(proxy.restore)
            else:
                await asyncio.to_thread(proxy.freeze)
                await asyncio.sleep(self.rng.uniform(0.2, 2.0))
                await asyncio.to_thread(proxy.restore)
            self.fault_epoch += 1

    async def sampler(self, pid):
        while not self.stop:
            fig = figures(pid)
            if fig is not None:
                self.sample(fig)
            await asyncio.sleep(1.0)

    async def settle(self, pid, ok, limit, stable=11.0):
        """Polls the figures until `ok(fig)` holds and the counts (not RSS)
        have not changed for `stable` seconds (tokio's blocking threads
        linger 10 s after their last use); returns the last figures."""
        deadline = time.monotonic() + limit
        last, since = None, time.monotonic()
        while True:
            fig = figures(pid)
            key = fig and tuple(v for k, v in sorted(fig.items()) if not k.startswith("rss"))
            if key != last:
                last, since = key, time.monotonic()
            if fig is not None and ok(fig) and time.monotonic() - since >= stable:
                return fig
            if time.monotonic() > deadline:
                return fig
            await asyncio.sleep(0.25)


class Worker:
    def __init__(self, soak, index, client, proxied, seed):
        self.soak, self.index, self.client, self.proxied = soak, index, client, proxied
        self.rng = random.Random(seed)

    def __str__(self):
        return "client %d%s" % (self.index, " (via the fault proxy)" if self.proxied else "")

    def epoch(self):
        """Changes whenever something disrupted this client's connection."""
        return (self.soak.restart_epoch, self.soak.fault_epoch if self.proxied else 0)


async def sweep(s, url, token):
    """Waits for the TTL'd commands to expire, then removes (and reports)
    whatever commands and shells the operations left."""
    left = {}
    async with tether.AsyncClient(url, token=token, options=OPTIONS) as c:
        deadline = time.monotonic() + EXPIRE_TTL + 30
        while True:
            cmds = await c.list()
            waiting = [i for i in cmds if i.labels.get("soak") == "expire"]
            if not waiting or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for i in waiting:
            s.fail("expire", "%s still held at the end, %gs past its TTL" % (i.command, 30))
        for i in await c.list():
            left[i.command] = "%s %s %s" % (i.labels.get("soak", "-"), i.state, " ".join(i.argv)[:60])
            try:
                await c.remove(i.command)
            except tether.CommandNotFound:
                pass
        shells = [sh for sh in await c.shells()]
        for sh in shells:
            left["shell " + sh.name] = sh.state
            await tether.AsyncShell(c, sh, created=False).close()
        held = (len(await c.list()), len([sh for sh in await c.shells()]))
    return left, held


async def main_async(args):
    s = Soak(args)
    proxied_n = args.clients // 2
    print("soak: %d s, %d clients (%d through the fault proxy), restart every %d s, seed %d" % (
        args.seconds, args.clients, proxied_n, args.restart_every, args.seed), flush=True)
    daemon = Daemon(cwd=s.workdir)
    pid = daemon.proc.pid
    s.direct_url, s.token = daemon.url, daemon.token
    proxy = FaultProxy(daemon.url)
    clients = []
    try:
        # Warm-up: one operation of each kind, no faults, then idle.
        async with tether.AsyncClient(daemon.url, token=daemon.token, options=OPTIONS) as c:
            w = Worker(s, -1, c, False, args.seed)
            for kind in s.OPS:
                await s.run_op(w, kind)
        base = await s.settle(pid, lambda f: f["descendants"] == 0, 60)
        base_fds, base_threads = fd_links(pid), thread_names(pid)
        print("baseline: %r" % base, flush=True)
        # The counts are of the run proper, not the warm-up.
        s.ops.clear()
        s.bytes_verified = 0
        if s.failures:
            raise SystemExit(report(s, base, None, {}, (0, 0), 0, daemon, pid, base_fds, base_threads))

        start = time.monotonic()
        until = start + args.seconds
        tail = max(args.restart_every, args.seconds / 3)
        for i in range(args.clients):
            proxied = i < proxied_n
            c = tether.AsyncClient(proxy.url if proxied else daemon.url, token=daemon.token, options=OPTIONS)
            clients.append(Worker(s, i, c, proxied, args.seed * 1000 + i))
        tasks = [asyncio.create_task(s.worker(w, until)) for w in clients]
        side = [
            asyncio.create_task(s.restarter(daemon, until - tail)),
            asyncio.create_task(s.faulter(proxy)),
            asyncio.create_task(s.sampler(pid)),
        ]
        last = start
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=30)
            if time.monotonic() - last >= 59:
                last = time.monotonic()
                print("t=%4.0fs ops=%d tolerated=%d failed=%d restarts=%d faults=%d figures=%r" % (
                    last - start, sum(s.ops.values()), sum(s.tolerated.values()), sum(s.failed.values()),
                    s.restarts, sum(s.faults.values()), figures(pid)), flush=True)
            if time.monotonic() > until + OP_LIMIT + 30:
                s.fail("run", "workers still busy %gs after the end" % (OP_LIMIT + 30))
                break
        s.stop = True
        for t in tasks + side:
            t.cancel()
        await asyncio.gather(*tasks, *side, return_exceptions=True)
        reconnects = sum(w.client.reconnects for w in clients)
        for w in clients:
            await asyncio.wait_for(w.client.aclose(), 30)
        clients = []
        proxy.close()
        try:
            left, held = await asyncio.wait_for(sweep(s, daemon.url, daemon.token), 120)
        except (asyncio.TimeoutError, tether.TetherError) as e:
            s.fail("sweep", "could not list and remove what was left: %r" % (e,))
            left, held = {}, (-1, -1)
        tol = tolerances(base)
        end = await s.settle(pid, lambda f: all(f[k] <= tol[k] for k in tol), 90)
        return report(s, base, end, left, held, reconnects, daemon, pid, base_fds, base_threads,
                      run_seconds=time.monotonic() - start)
    finally:
        for w in clients:
            try:
                await asyncio.wait_for(w.client.aclose(), 10)
            except BaseException:
                pass
        proxy.close()
        daemon.stop()
        shutil.rmtree(s.workdir, ignore_errors=True)


def tolerances(base):
    return {
        "fds": base["fds"] + 2,
        "threads": base["threads"] + 2,
        "children": 0,
        "descendants": 0,
        "zombies": 0,
        "rss_kib": base["rss_kib"] + max(32 << 10, base["rss_kib"] // 2),
    }


def report(s, base, end, left, held, reconnects, daemon, pid, base_fds, base_threads, run_seconds=0.0):
    ok = not s.failures
    print()
    print("## soak figures (daemon pid %d)" % pid)
    print()
    print("| figure | baseline | min | max | end | tolerance | |")
    print("|---|---:|---:|---:|---:|---:|---|")
    tol = tolerances(base)
    texts = {"fds": "base + 2", "threads": "base + 2", "children": "0", "descendants": "0", "zombies": "0",
             "rss_kib": "base + max(32 MiB, 50%)"}
    for k in ("fds", "threads", "children", "descendants", "zombies", "rss_kib"):
        lo, hi = s.samples[k]
        e = None if end is None else end[k]
        good = e is not None and e <= tol[k]
        ok = ok and good
        print("| %s | %d | %s | %s | %s | %s (%d) | %s |" % (
            k, base[k], lo, hi, e, texts[k], tol[k], "ok" if good else "**FAIL**"))
    lo, hi = s.samples["rss_anon_kib"]
    print("| (rss_anon_kib: heap, of rss) | %d | %s | %s | %s | reported | |" % (
        base["rss_anon_kib"], lo, hi, None if end is None else end["rss_anon_kib"]))
    if end is not None:
        good = held == (0, 0)
        ok = ok and good
        print("| commands, shells held | - | - | - | %d, %d | 0, 0 | %s |" % (held[0], held[1],
                                                                         "ok" if good else "**FAIL**"))
    print()
    print("| operation | ok | tolerated | failed |")
    print("|---|---:|---:|---:|")
    tol_by_kind = collections.Counter()
    for k, n in s.tolerated.items():
        tol_by_kind[k.split(":")[0]] += n
    for k in Soak.OPS:
        print("| %s | %d | %d | %d |" % (k, s.ops[k], tol_by_kind[k], s.failed[k]))
    print("| **all** | %d | %d | %d |" % (sum(s.ops.values()), sum(tol_by_kind.values()),
                                         sum(s.failed.values())))
    print()
    print("run: %.0f s to the end figures; restarts: %d (listening again after %s ms); faults: %s; "
          "client reconnects: %d; bytes verified: %d (%.1f MiB)" % (
              run_seconds, s.restarts,
              "n/a" if not s.restart_ms else "%.0f mean, %.0f max" % (
                  sum(s.restart_ms) / len(s.restart_ms), max(s.restart_ms)),
              ", ".join("%s %d" % kv for kv in sorted(s.faults.items())) or "none",
              reconnects, s.bytes_verified, s.bytes_verified / (1 << 20)))
    if s.tolerated:
        print("tolerated errors: " + "; ".join("%s x%d" % kv for kv in sorted(s.tolerated.items())))
    if left:
        print("left by interrupted operations (removed by the sweep): %d" % len(left))
        for k, v in sorted(left.items())[:20]:
            print("  %s: %s" % (k, v))
    over = set() if end is None else {k for k in tol if end[k] > tol[k]}
    if over:
        print("\nwhat is left in the daemon (pid %d), as it is now:" % pid)
    if "fds" in over:
        links = fd_links(pid)
        was = collections.Counter(fd_kind(v) for v in base_fds.values())
        now = collections.Counter(fd_kind(v) for v in links.values())
        print("  fds by kind, baseline -> end: " + ", ".join(
            "%s %d -> %d" % (k, was[k], now[k]) for k in sorted(set(was) | set(now)) if was[k] != now[k]))
        for fd, link in sorted(links.items()):
            if base_fds.get(fd) != link:
                print("  fd %d -> %s (not at baseline)" % (fd, link))
    if "threads" in over:
        names = thread_names(pid)
        print("  threads by name, baseline -> end: " + ", ".join(
            "%s %d -> %d" % (k, base_threads[k], names[k]) for k in sorted(set(names) | set(base_threads))))
    if over & {"children", "descendants", "zombies"}:
        tab = proc_table()
        for p in descendants(pid, tab):
            print("  descendant %d (ppid %d, state %s): %s" % (p, tab[p][0], tab[p][1], cmdline(p)))
    if "rss_kib" in over:
        print("  rss %d KiB (heap %d KiB) against %d KiB (heap %d KiB) at baseline" % (
            end["rss_kib"], end["rss_anon_kib"], base["rss_kib"], base["rss_anon_kib"]))
    if s.failures:
        print("\nfailures (first %d):" % len(s.failures))
        for f in s.failures:
            print("  " + f)
    print("\nsoak: %s" % ("PASS" if ok else "FAIL"), flush=True)
    return 0 if ok else 1


async def main_bounded(args):
    """The run, cancelled (so that its daemon is stopped) on SIGTERM, as
    scripts/soak.sh's `timeout` sends it."""
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main_async(args)
    except asyncio.CancelledError:
        print("soak: terminated (SIGTERM)", flush=True)
        return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "600")))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("SOAK_CLIENTS", "10")))
    ap.add_argument("--restart-every", type=int, default=60)
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 31))
    ap.add_argument("--ops", default="", help="only these operations (comma-separated names), to chase one")
    args = ap.parse_args()
    bad = [k for k in args.ops.split(",") if args.ops and k not in Soak.OPS]
    if bad:
        ap.error("unknown operations %s (known: %s)" % (", ".join(bad), ", ".join(Soak.OPS)))
    sys.exit(asyncio.run(main_bounded(args)))


if __name__ == "__main__":
    main()
