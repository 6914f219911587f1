#!/usr/bin/env python3
"""The Python SDK's benchmark, side by side with the Rust client and the
physical floor, all against ONE tether daemon this script starts (see
README.md next to this file, and BENCHMARKS.md at the repository root for
how tether's figures are reported).

Rows (one markdown table):

1. ``exec(["true"])`` round trip over an open connection, p50/p90: the raw
   fork+exec+wait floor (Rust ``std::process::Command::status``, what
   ``tether-bench`` row 1 does, and Python ``os.posix_spawn`` +
   ``os.waitpid``), the Rust client (``Client::run``), Python
   ``Client.exec`` and ``AsyncClient.exec``.
2. 1 GiB of stdout (``head -c N /dev/zero``) delivered losslessly, MiB/s:
   the raw pipe floor (``head -c N /dev/zero | cat > /dev/null``), the Rust
   client (``start`` with ``pace: true``, counting ``Stdout`` events), and
   Python ``run(cmd, wait=False, capture=False)`` iterated, sync and async.
   Every count is checked against N and the exit's ``stdout_bytes``.
3. Memory of a client holding 1,000 idle handles (``run(["sleep", "60"],
   wait=False)``): RSS of a fresh client process before and after, KiB per
   handle; the Rust client holding 1,000 ``Execution``s likewise.

The Rust figures come from ``crates/tether-bench/src/bin/client_figures.rs``
(``target/release/client_figures``, built if missing), run against the
same daemon.

Run: ``python3 sdk/python/bench/bench.py`` (re-executes itself with the
SDK's venv, ``target/sdk-venv``, if ``tether`` is not importable);
``--quick`` for a smoke run of well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(SDK))
SRC = os.path.join(SDK, "src")
VENV_PY = os.path.join(ROOT, "target", "sdk-venv", "bin", "python")


def _ensure_sdk_importable() -> None:
    """Re-executes under the SDK's venv (with PYTHONPATH=src) when the
    current interpreter cannot import ``tether`` and its dependencies."""
    sys.path.insert(0, SRC)
    try:
        import msgpack  # noqa: F401
        import websockets  # noqa: F401

        import tether  # noqa: F401
    except ImportError:
        if os.environ.get("_TETHER_BENCH_REEXEC") or not os.path.exists(VENV_PY):
            raise
        env = dict(os.environ, _TETHER_BENCH_REEXEC="1")
        env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        os.execve(VENV_PY, [VENV_PY, os.path.abspath(__file__), *sys.argv[1:]], env)


_ensure_sdk_importable()

import tether  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------ formatting


def nearest_rank(sorted_s: list[float], p: float) -> float:
    """The smallest sample with at least p of the samples at or below it
    (as tether-bench's report.rs)."""
    n = len(sorted_s)
    k = min(max(int(-(-p * n // 1)), 1), n)
    return sorted_s[k - 1]


def fmt_dur(s: float) -> str:
    us = s * 1e6
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_bytes(n: int) -> str:
    if n % GiB == 0:
        return f"{n // GiB} GiB"
    if n % MiB == 0:
        return f"{n // MiB} MiB"
    return f"{n} B"


@dataclass
class Lat:
    samples: list[float]

    def __post_init__(self) -> None:
        self.samples = sorted(self.samples)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def p50(self) -> float:
        return nearest_rank(self.samples, 0.50)

    @property
    def p90(self) -> float:
        return nearest_rank(self.samples, 0.90)

    @property
    def p99(self) -> float:
        return nearest_rank(self.samples, 0.99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)


@dataclass
class Transfer:
    bytes: int
    elapsed: float
    client_cpu: Optional[float] = None
    daemon_cpu: Optional[float] = None
    events: int = 0

    @property
    def rate(self) -> float:
        return self.bytes / MiB / max(self.elapsed, 1e-9)


@dataclass
class Runs:
    runs: list[Transfer]

    @property
    def median(self) -> Transfer:
        s = sorted(self.runs, key=lambda t: t.rate)
        return s[len(s) // 2]

    @property
    def lo(self) -> float:
        return min(t.rate for t in self.runs)

    @property
    def hi(self) -> float:
        return max(t.rate for t in self.runs)


@dataclass
class Row:
    section: str
    what: str
    samples: str = "-"
    p50: str = "-"
    p90: str = "-"
    result: str = "-"
    vs_rust: str = "-"
    notes: str = ""


def render(rows: list[Row]) -> str:
    head = "| # | measurement | samples | p50 | p90 | result | vs Rust client | notes |\n"
    head += "|---|---|---|---|---|---|---|---|\n"
    out = [head]
    for r in rows:
        cells = [r.section, r.what, r.samples, r.p50, r.p90, r.result, r.vs_rust, r.notes]
        out.append("| " + " | ".join((c or "-").replace("|", "\\|") for c in cells) + " |\n")
    return "".join(out)


# --------------------------------------------------------------- processes


def cpu_of(pid: int) -> Optional[float]:
    """User + system CPU seconds of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def find_daemon(args: argparse.Namespace) -> str:
    env = os.environ.get("TETHER_BIN")
    if env:
        path = env if os.path.isabs(env) else os.path.join(ROOT, env)
        if not os.path.exists(path):
            sys.exit(f"TETHER_BIN={env}: no such file")
        return path
    for cand in ("target/release/tether", "target/debug/tether"):
        path = os.path.join(ROOT, cand)
        if os.path.exists(path):
            return path
    progress("no tether binary: cargo build --release -p tether (may take minutes)")
    subprocess.run(["cargo", "build", "--release", "-p", "tether"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target/release/tether")


def find_client_figures() -> str:
    env = os.environ.get("TETHER_CLIENT_FIGURES")
    if env:
        return env
    path = os.path.join(ROOT, "target/release/client_figures")
    if not os.path.exists(path):
        progress("no client_figures binary: cargo build --release -p tether-bench")
        subprocess.run(["cargo", "build", "--release", "-p", "tether-bench"], cwd=ROOT, check=True)
    return path


class Daemon:
    """``tether serve --listen 127.0.0.1:0`` with a random token; its log
    (warnings) in a temporary directory."""

    def __init__(self, binary: str, logdir: str) -> None:
        self.binary = binary
        self.token = "pybench-" + secrets.token_hex(16)
        self.log = os.path.join(logdir, "tether.log")
        env = dict(os.environ, TETHER_TOKEN=self.token, TETHER_LOG="warn")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(self.log, "wb"),  # noqa: SIM115 (lives as long as the daemon)
            env=env,
            cwd=logdir,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("tether: listening on "):
            self.stop()
            sys.exit(f"the daemon did not start ({first!r}); see {self.log}")
        self.url = first.split("listening on ", 1)[1].strip()
        self.pid = self.proc.pid
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def stop(self) -> None:
        """SIGTERM (the daemon kills its commands), SIGKILL after 5 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Rust:
    """The Rust client's figures, from the client_figures binary."""

    def __init__(self, binary: str, d: Daemon) -> None:
        self.binary, self.d = binary, d

    def __call__(self, *mode: str, timeout: float = 600) -> dict[str, Any]:
        env = dict(os.environ, TETHER_TOKEN=self.d.token)
        r = subprocess.run(
            [self.binary, "--url", self.d.url, *mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(f"client_figures {' '.join(mode)}: {r.stderr.strip()[-500:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------- 1. exec round trips


def py_spawn_floor(n: int) -> list[float]:
    """``os.posix_spawn`` + ``os.waitpid`` of /bin/true."""
    true = shutil.which("true") or "/bin/true"
    env = dict(os.environ)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        pid = os.posix_spawn(true, [true], env)
        _, status = os.waitpid(pid, 0)
        out.append(time.perf_counter() - t)
        if status != 0:
            raise RuntimeError(f"true exited with status {status}")
    return out


def sync_exec(d: Daemon, n: int, warmup: int) -> list[float]:
    with tether.Client(d.url, token=d.token) as c:
        for _ in range(warmup):
            c.exec(["true"])
        out = []
        for _ in range(n):
            t = time.perf_counter()
            r = c.exec(["true"])
            out.append(time.perf_counter() - t)
            if r.exit_code != 0:
                raise RuntimeError(f"true: {r}")
        return out


def async_exec(d: Daemon, n: int, warmup: int) -> list[float]:
    async def main() -> list[float]:
        async with tether.AsyncClient(d.url, token=d.token) as c:
            for _ in range(warmup):
                await c.exec(["true"])
            out = []
            for _ in range(n):
                t = time.perf_counter()
                r = await c.exec(["true"])
                out.append(time.perf_counter() - t)
                if r.exit_code != 0:
                    raise RuntimeError(f"true: {r}")
            return out

    return asyncio.run(main())


def round_trip_rows(
    args: argparse.Namespace, d: Daemon, rust: Rust, rows: list[Row], targets: list[Row]
) -> None:
    """Each contender gets N samples, taken in ``rounds`` interleaved
    rounds (floor, Rust, sync, async, ...), so a slow minute of this VM
    does not fall on one contender only."""
    names = ["floor_rust", "floor_py", "rust", "sync", "async"]
    got: dict[str, list[float]] = {k: [] for k in names}
    errors: dict[str, str] = {}
    rounds = max(1, args.rounds)
    per = [args.n // rounds + (1 if i < args.n % rounds else 0) for i in range(rounds)]
    for i, k in enumerate(per):
        progress(f"1. round trips: round {i + 1}/{rounds}, {k} samples each")
        jobs: dict[str, Callable[[], list[float]]] = {
            "floor_rust": lambda k=k: [x / 1e9 for x in rust("spawn", str(k))["samples_ns"]],
            "floor_py": lambda k=k: py_spawn_floor(k),
            "rust": lambda k=k: [x / 1e9 for x in rust("round-trip", str(k), str(args.warmup))["samples_ns"]],
            "sync": lambda k=k: sync_exec(d, k, args.warmup),
            "async": lambda k=k: async_exec(d, k, args.warmup),
        }
        for name, job in jobs.items():
            if name in errors:
                continue
            try:
                got[name] += job()
            except Exception as e:
                errors[name] = f"FAILED: {type(e).__name__}: {e}"
    lat = {k: Lat(v) for k, v in got.items() if v and k not in errors}
    floor = lat.get("floor_rust")
    rust_l = lat.get("rust")
    what = {
        "floor_rust": "floor: raw fork+exec+wait of `true` (Rust `std::process::Command::status`)",
        "floor_py": "floor: raw fork+exec+wait of `true` (Python `os.posix_spawn` + `os.waitpid`)",
        "rust": 'Rust client `Client::run(["true"])`, open connection',
        "sync": 'Python `Client.exec(["true"])` (sync), open connection',
        "async": 'Python `AsyncClient.exec(["true"])`, open connection',
    }
    for k in names:
        row = Row("1", what[k])
        if k in errors:
            row.result = errors[k]
            rows.append(row)
            continue
        lk = lat[k]
        row.samples, row.p50, row.p90 = str(lk.n), fmt_dur(lk.p50), fmt_dur(lk.p90)
        row.result = f"mean {fmt_dur(lk.mean)}"
        notes = []
        if k.startswith("floor"):
            notes.append("the physical limit for starting a process")
            if k == "floor_rust":
                notes.append("what tether-bench row 1 measures")
        else:
            notes.append(f"start..exit, after {args.warmup} warm-up runs per round; p99 {fmt_dur(lk.p99)}")
            if floor:
                notes.append(f"p50 = {lk.p50 / floor.p50:.2f}x the Rust floor")
            if k == "rust":
                notes.append("`start` with `pace: true` + `output()`, which is what `run` does")
            else:
                notes.append("`exec` also sends a `remove` for the ended command (not awaited)")
            if rust_l:
                row.vs_rust = f"{lk.p50 / rust_l.p50:.2f}x (p90 {lk.p90 / rust_l.p90:.2f}x)"
        if rounds > 1:
            notes.append(f"{rounds} interleaved rounds")
        row.notes = "; ".join(notes)
        rows.append(row)
    for k, label in (("sync", "sync"), ("async", "async")):
        t = Row("T", f"target: Python {label} exec p50 <= 1.5x the Rust client")
        if k in lat and rust_l:
            ratio = lat[k].p50 / rust_l.p50
            t.result = f"{'met' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x)"
            t.notes = f"{fmt_dur(lat[k].p50)} vs {fmt_dur(rust_l.p50)}"
        else:
            t.result = "n/a (a row failed)"
        targets.append(t)


# ------------------------------------------------------ 2. throughput


def raw_pipe(n: int) -> Transfer:
    t = time.perf_counter()
    subprocess.run(["sh", "-c", f"head -c {n} /dev/zero | cat > /dev/null"], check=True)
    return Transfer(n, time.perf_counter() - t)


def _check(n: int, got: int, gaps: int, r: Any) -> None:
    status = r.status
    if got != n or gaps or r.lost_bytes or status is None or status.stdout_bytes != n or r.exit_code != 0:
        raise RuntimeError(
            f"received {got} of {n} B, {gaps} gap events, lost {r.lost_bytes} B, "
            f"exit {r.exit_code} reporting {status and status.stdout_bytes} B"
        )


def head_argv(n: int) -> list[str]:
    return ["head", "-c", str(n), "/dev/zero"]


def sync_stream(d: Daemon, n: int) -> Transfer:
    with tether.Client(d.url, token=d.token) as c:
        c.exec(["true"])  # the connection is open before the clock starts
        cpu0, dcpu0 = time.process_time(), cpu_of(d.pid)
        t = time.perf_counter()
        h = c.run(head_argv(n), wait=False, capture=False)
        got = gaps = events = 0
        for ev in h:
            if isinstance(ev, tether.OutputEvent):
                got += len(ev.data)
                events += 1
            elif isinstance(ev, tether.GapEvent):
                gaps += 1
        r = h.wait()
        elapsed = time.perf_counter() - t
        cpu, dcpu1 = time.process_time() - cpu0, cpu_of(d.pid)
        _check(n, got, gaps, r)
        c.remove(r.command_id)
        dcpu = None if dcpu0 is None or dcpu1 is None else dcpu1 - dcpu0
        return Transfer(got, elapsed, cpu, dcpu, events)


def async_stream(d: Daemon, n: int) -> Transfer:
    async def main() -> Transfer:
        async with tether.AsyncClient(d.url, token=d.token) as c:
            await c.exec(["true"])
            cpu0, dcpu0 = time.process_time(), cpu_of(d.pid)
            t = time.perf_counter()
            h = await c.run(head_argv(n), wait=False, capture=False)
            got = gaps = events = 0
            async for ev in h:
                if isinstance(ev, tether.OutputEvent):
                    got += len(ev.data)
                    events += 1
                elif isinstance(ev, tether.GapEvent):
                    gaps += 1
            r = await h.wait()
            elapsed = time.perf_counter() - t
            cpu, dcpu1 = time.process_time() - cpu0, cpu_of(d.pid)
            _check(n, got, gaps, r)
            await c.remove(r.command_id)
            dcpu = None if dcpu0 is None or dcpu1 is None else dcpu1 - dcpu0
            return Transfer(got, elapsed, cpu, dcpu, events)

    return asyncio.run(main())


def rust_stream(d: Daemon, rust: Rust, n: int) -> Transfer:
    dcpu0 = cpu_of(d.pid)
    out = rust("stream", str(n))
    dcpu1 = cpu_of(d.pid)
    dcpu = None if dcpu0 is None or dcpu1 is None else dcpu1 - dcpu0
    return Transfer(out["bytes"], out["elapsed_s"], out.get("cpu_s"), dcpu)


def throughput_rows(
    args: argparse.Namespace, d: Daemon, rust: Rust, rows: list[Row], targets: list[Row]
) -> None:
    n, k = args.stream_bytes, max(1, args.repeat)
    names = ["floor", "rust", "sync", "async"]
    jobs: dict[str, Callable[[], Transfer]] = {
        "floor": lambda: raw_pipe(n),
        "rust": lambda: rust_stream(d, rust, n),
        "sync": lambda: sync_stream(d, n),
        "async": lambda: async_stream(d, n),
    }
    got: dict[str, list[Transfer]] = {x: [] for x in names}
    errors: dict[str, str] = {}
    for i in range(k):
        for name in names:
            if name in errors:
                continue
            progress(f"2. throughput: {name}, run {i + 1}/{k} of {fmt_bytes(n)}")
            try:
                got[name].append(jobs[name]())
            except Exception as e:
                errors[name] = f"FAILED: {type(e).__name__}: {e}"
    runs = {x: Runs(v) for x, v in got.items() if v and x not in errors}
    what = {
        "floor": "floor: raw pipe `head -c N /dev/zero | cat > /dev/null`",
        "rust": "Rust client `start` (`pace: true`) + `Stdout` events",
        "sync": "Python `Client.run(cmd, wait=False, capture=False)`, iterated (sync)",
        "async": "Python `AsyncClient.run(cmd, wait=False, capture=False)`, iterated",
    }
    rust_r = runs.get("rust")
    floor = runs.get("floor")
    for name in names:
        row = Row("2", what[name], samples=f"{k} x {fmt_bytes(n)}")
        if name in errors:
            row.result = errors[name]
            rows.append(row)
            continue
        r = runs[name]
        m = r.median
        row.result = f"{m.rate:.0f} MiB/s"
        notes = [
            f"median run: {fmt_bytes(m.bytes)} in {fmt_dur(m.elapsed)}; range {r.lo:.0f}-{r.hi:.0f} MiB/s"
        ]
        if name == "floor":
            notes.append("the physical limit")
        else:
            cpu = []
            if m.daemon_cpu is not None:
                cpu.append(f"daemon {m.daemon_cpu:.2f} s")
            if m.client_cpu is not None:
                cpu.append(f"client {m.client_cpu:.2f} s")
            if cpu:
                notes.append("CPU in that run: " + ", ".join(cpu))
            if m.events:
                notes.append(f"{m.events} output events of {m.bytes / m.events / 1024:.0f} KiB on average")
            notes.append("lossless: byte count, gaps and the exit's `stdout_bytes` checked")
            if floor:
                notes.append(f"{100 * m.rate / floor.median.rate:.0f}% of the raw pipe")
            if rust_r and name != "rust":
                row.vs_rust = f"{100 * m.rate / rust_r.median.rate:.0f}%"
        row.notes = "; ".join(notes)
        rows.append(row)
    for name, label in (("sync", "sync"), ("async", "async")):
        t = Row("T", f"target: Python {label} streaming >= 50% of the Rust client's rate")
        if name in runs and rust_r:
            pct = 100 * runs[name].median.rate / rust_r.median.rate
            t.result = f"{'met' if pct >= 50 else 'MISSED'} ({pct:.0f}%)"
            t.notes = f"{runs[name].median.rate:.0f} vs {rust_r.median.rate:.0f} MiB/s"
        else:
            t.result = "n/a (a row failed)"
        targets.append(t)


# -------------------------------------------------------- 3. memory

# Runs in a fresh interpreter: RSS before and after N idle handles on one
# client, then every command removed.
MEMORY_CHILD = r"""
import asyncio, gc, json, sys, time
import tether

url, token, n, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def sync():
    with tether.Client(url, token=token) as c:
        for _ in range(5):
            c.exec(["true"])
        gc.collect()
        before = rss()
        t = time.perf_counter()
        held = [c.run(["sleep", "60"], wait=False) for _ in range(n)]
        took = time.perf_counter() - t
        gc.collect()
        after = rss()
        for h in held:
            c.remove(h.command_id)
        return before, after, took

async def amain():
    async with tether.AsyncClient(url, token=token) as c:
        for _ in range(5):
            await c.exec(["true"])
        gc.collect()
        before = rss()
        t = time.perf_counter()
        held = [await c.run(["sleep", "60"], wait=False) for _ in range(n)]
        took = time.perf_counter() - t
        gc.collect()
        after = rss()
        for h in held:
            await c.remove(h.command_id)
        return before, after, took

before, after, took = sync() if kind == "sync" else asyncio.run(amain())
print(json.dumps({"n": n, "rss_before_kib": before, "rss_after_kib": after, "start_s": took}))
"""


def py_memory(d: Daemon, n: int, kind: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    r = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, d.url, d.token, str(n), kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-500:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def sleeps_left(d: Daemon) -> int:
    """Live `sleep` processes among the daemon's children."""
    left = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        rest = stat.rsplit(")", 1)[1].split()
        if name == "sleep" and rest[0] != "Z" and int(rest[1]) == d.pid:
            left += 1
    return left


def memory_rows(args: argparse.Namespace, d: Daemon, rust: Rust, rows: list[Row]) -> None:
    n = args.handles
    results: dict[str, Any] = {}
    for name, job in (
        ("rust", lambda: rust("handles", str(n))),
        ("sync", lambda: py_memory(d, n, "sync")),
        ("async", lambda: py_memory(d, n, "async")),
    ):
        progress(f"3. memory: {name}, {n} idle handles")
        try:
            results[name] = job()
        except Exception as e:
            results[name] = f"FAILED: {type(e).__name__}: {e}"
        # Removal is asynchronous in the daemon; let it finish before the next.
        deadline = time.monotonic() + 10
        while sleeps_left(d) and time.monotonic() < deadline:
            time.sleep(0.1)
    what = {
        "rust": "Rust client holding N `Execution`s of `sleep 60` (`start`, `pace: true`)",
        "sync": 'Python `Client`: N x `run(["sleep", "60"], wait=False)` held',
        "async": 'Python `AsyncClient`: N x `await run(["sleep", "60"], wait=False)` held',
    }
    per: dict[str, float] = {}
    for name in ("rust", "sync", "async"):
        row = Row("3", what[name], samples=str(n))
        r = results[name]
        if isinstance(r, str):
            row.result = r
            rows.append(row)
            continue
        per[name] = (r["rss_after_kib"] - r["rss_before_kib"]) / max(r["n"], 1)
        row.result = f"{per[name]:.1f} KiB/handle"
        notes = [
            f"client process RSS {r['rss_before_kib'] / 1024:.1f} MiB -> {r['rss_after_kib'] / 1024:.1f} MiB "
            f"with {r['n']} handles"
        ]
        if "start_s" in r:
            notes.append(f"{r['n']} starts in {r['start_s']:.2f} s")
        notes.append("a fresh process, after connecting and 5 warm-up runs; commands removed afterwards")
        if name != "rust" and "rust" in per and per["rust"] > 0:
            row.vs_rust = f"{per[name] / per['rust']:.1f}x"
        row.notes = "; ".join(notes)
        rows.append(row)
    left = sleeps_left(d)
    if left:
        progress(f"3. memory: {left} sleeps still running after removal (the daemon's stop kills them)")


# ------------------------------------------------------------ profiling


def profile(args: argparse.Namespace, d: Daemon) -> str:
    """cProfile of the async client (everything on this thread): N exec
    round trips, then one stream; and of the sync client's stream with a
    profiler on both its threads (caller and loop)."""
    out = io.StringIO()

    def dump(title: str, prof: cProfile.Profile, limit: int = 22) -> None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(limit)
        out.write(f"\n### {title}\n\n```\n{s.getvalue().strip()}\n```\n")

    async def execs() -> None:
        async with tether.AsyncClient(d.url, token=d.token) as c:
            for _ in range(20):
                await c.exec(["true"])
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.n):
                await c.exec(["true"])
            prof.disable()
            dump(f'AsyncClient.exec(["true"]) x {args.n}', prof)

    asyncio.run(execs())

    async def stream() -> None:
        async with tether.AsyncClient(d.url, token=d.token) as c:
            await c.exec(["true"])
            prof = cProfile.Profile()
            prof.enable()
            h = await c.run(head_argv(args.stream_bytes), wait=False, capture=False)
            async for _ in h:
                pass
            await h.wait()
            prof.disable()
            dump(f"AsyncClient.run(head -c {fmt_bytes(args.stream_bytes)}) iterated", prof)

    asyncio.run(stream())

    with tether.Client(d.url, token=d.token) as c:
        c.exec(["true"])
        loop_prof, main_prof = cProfile.Profile(), cProfile.Profile()
        c._portal.call(_enable(loop_prof))
        main_prof.enable()
        h = c.run(head_argv(args.stream_bytes), wait=False, capture=False)
        for _ in h:
            pass
        h.wait()
        main_prof.disable()
        c._portal.call(_disable(loop_prof))
        dump("Client.run (sync) iterated: the calling thread", main_prof, 12)
        dump("Client.run (sync) iterated: the client's loop thread", loop_prof)
    return out.getvalue()


async def _enable(p: cProfile.Profile) -> None:
    p.enable()


async def _disable(p: cProfile.Profile) -> None:
    p.disable()


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: N=60, 64 MiB, 200 handles")
    ap.add_argument("--n", type=int, help="round trips per contender (default 300; --quick 60)")
    ap.add_argument(
        "--warmup", type=int, help="warm-up runs per contender and round (default 30; --quick 10)"
    )
    ap.add_argument("--rounds", type=int, help="interleaved rounds of the round trips (default 3)")
    ap.add_argument("--stream-bytes", type=int, help="bytes streamed (default 1 GiB; --quick 64 MiB)")
    ap.add_argument("--repeat", type=int, help="runs of each stream (median shown; default 3)")
    ap.add_argument("--handles", type=int, help="idle handles in the memory rows (default 1000; --quick 200)")
    ap.add_argument(
        "--only",
        choices=["exec", "stream", "memory", "profile"],
        help="run one section (`profile`: only the profiles, no table rows)",
    )
    ap.add_argument(
        "--profile", action="store_true", help="also print cProfile summaries of the Python client"
    )
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()
    q = args.quick
    if args.only == "profile":
        args.profile = True
    defaults = {
        "n": 60 if q else 300,
        "warmup": 10 if q else 30,
        "rounds": 3,
        "stream_bytes": 64 * MiB if q else GiB,
        "repeat": 3,
        "handles": 200 if q else 1000,
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    daemon_bin = find_daemon(args)
    figures = find_client_figures()
    logdir = tempfile.mkdtemp(prefix="tether-pybench-")
    progress(f"daemon {daemon_bin}; logs in {logdir}")
    d = Daemon(daemon_bin, logdir)
    rust = Rust(figures, d)
    rows: list[Row] = []
    targets: list[Row] = []
    prof_text = ""
    t0 = time.monotonic()
    try:
        if args.only in (None, "exec"):
            round_trip_rows(args, d, rust, rows, targets)
        if args.only in (None, "stream"):
            throughput_rows(args, d, rust, rows, targets)
        if args.only in (None, "memory"):
            memory_rows(args, d, rust, rows)
        if args.profile:
            progress("profiling")
            prof_text = profile(args, d)
    finally:
        d.stop()
    import msgpack
    import websockets

    header = (
        f"tether Python SDK bench: {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}, websockets {websockets.__version__}, "
        f"msgpack {'.'.join(map(str, msgpack.version))}; daemon {os.path.relpath(daemon_bin, ROOT)}; "
        f"{time.monotonic() - t0:.0f} s\n"
        f"command: {' '.join([os.path.relpath(os.path.abspath(__file__), ROOT), *sys.argv[1:]])}\n\n"
    )
    text = header + render(rows + targets) + prof_text
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
