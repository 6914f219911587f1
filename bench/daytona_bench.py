#!/usr/bin/env python3
"""The Daytona dialect's benchmark: the unchanged Daytona SDK (0.226.1)
against ONE tether daemon this script starts (release build), side by side
with tether's native routes and the physical floor measured in the same run.

Rows (one markdown table):

1. ``exec("true")`` round trip, p50/p90 ms: the floor (Python
   ``os.posix_spawn`` + ``waitpid`` of ``/bin/sh -c true``), tether's native
   ``POST /v1/exec`` (httpx, one kept-alive connection), Daytona sync
   ``process.exec`` and async ``AsyncProcess.exec``.
2. A session command ``true`` (``execute_session_command``, sync), p50/p90
   ms: the floor (a bash coprocess told ``true; echo marker``), Daytona sync.
3. 64 MiB of output answered by ``exec`` (``head -c N /dev/zero | tr``; the
   most ``execute`` answers),
   MiB/s: the floor (the same pipeline into ``/dev/null``), native
   ``POST /v1/exec``, Daytona ``process.exec`` (the length is checked).
4. Files, 256 MiB each way, MiB/s: the floor (``cp`` of the file on the
   same disk), Daytona ``fs.upload_file`` (a local path) and
   ``fs.download_file`` (to a local path); sha256 checked.

Run: ``python3 bench/daytona_bench.py`` (re-executes itself with the Daytona
venv, ``target/daytona-venv``, made by ``scripts/daytona-tests.sh``);
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(ROOT, "target", "daytona-venv", "bin", "python")
TETHER = os.path.join(ROOT, "target", "release", "tether")

try:
    import httpx
    from daytona import AsyncDaytona, Daytona, DaytonaConfig, SessionExecuteRequest
except ImportError:
    if os.path.exists(VENV_PY) and sys.executable != VENV_PY:
        os.execv(VENV_PY, [VENV_PY, *sys.argv])
    sys.exit("the Daytona venv is missing: run bash scripts/daytona-tests.sh once")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def timed(n: int, f) -> list[float]:
    for _ in range(min(20, n)):
        f()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    return out


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system), seconds."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def spawn_true(shell: str = "/bin/sh") -> None:
    pid = os.posix_spawn(shell, [shell, "-c", "true"], os.environ)
    os.waitpid(pid, 0)


class Coproc:
    """A bash told `true; echo marker` per round trip: the session floor."""

    def __init__(self) -> None:
        self.p = subprocess.Popen(["bash"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def round(self) -> None:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(b"true; echo __m__\n")
        buf = b""
        while not buf.endswith(b"__m__\n"):
            buf += self.p.stdout.read(64)

    def close(self) -> None:
        self.p.kill()
        self.p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    n = 50 if a.quick else 400
    big = (16 if a.quick else 256) << 20
    if not os.path.exists(TETHER):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "tether"], cwd=ROOT, check=True)
    token = secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="tether-daytona-bench-")
    env = dict(os.environ, TETHER_TOKEN=token)
    d = subprocess.Popen(
        [TETHER, "serve", "--listen", "127.0.0.1:0", "--files-root", work, "--ring-bytes", str(4 << 20)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = None
        assert d.stdout
        for line in d.stdout:
            if "http://" in line:
                url = line[line.index("http://"):].split()[0].rstrip("/")
                break
        assert url, "the daemon did not say where it listens"
        rows = run_rows(url, token, n, big, work, d.pid)
    finally:
        d.terminate()
        d.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nDaytona dialect, {os.cpu_count()} cores, n={n}, big={big >> 20} MiB\n")
    print("| row | what | p50 / rate | p90 | vs floor |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def run_rows(url: str, token: str, n: int, big: int, work: str, daemon: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    cfg = DaytonaConfig(api_url=url + "/compat/daytona/api", api_key=token)
    sb = Daytona(cfg).get("local")
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600)

    def native_exec(cmd: str) -> dict:
        r = http.post("/v1/exec", json={"command": cmd, "max_output_bytes": big + 4096})
        r.raise_for_status()
        return r.json()

    # 1. exec("true").
    floor = timed(n, spawn_true)
    f50 = statistics.median(floor)
    rows.append(("1", "floor: posix_spawn sh -c true + waitpid", f"{f50:.2f} ms", f"{pct(floor, .9):.2f} ms", "1.00x"))
    xs = timed(n, lambda: spawn_true("/bin/bash"))
    rows.append(("1", "floor: posix_spawn bash -c true + waitpid (the daemon's shell)", f"{statistics.median(xs):.2f} ms", f"{pct(xs, .9):.2f} ms", f"{statistics.median(xs) / f50:.2f}x"))
    for name, f in [
        ("tether native POST /v1/exec", lambda: native_exec("true")),
        ("Daytona sync process.exec", lambda: sb.process.exec("true")),
    ]:
        xs = timed(n, f)
        rows.append(("1", name, f"{statistics.median(xs):.2f} ms", f"{pct(xs, .9):.2f} ms", f"{statistics.median(xs) / f50:.2f}x"))

    async def async_exec() -> list[float]:
        ad = AsyncDaytona(cfg)
        asb = await ad.get("local")
        for _ in range(20):
            await asb.process.exec("true")
        out = []
        for _ in range(n):
            t = time.perf_counter()
            await asb.process.exec("true")
            out.append((time.perf_counter() - t) * 1000)
        await ad.close()
        return out

    xs = asyncio.run(async_exec())
    rows.append(("1", "Daytona async process.exec", f"{statistics.median(xs):.2f} ms", f"{pct(xs, .9):.2f} ms", f"{statistics.median(xs) / f50:.2f}x"))

    # 2. Session command.
    co = Coproc()
    floor = timed(n, co.round)
    co.close()
    f50 = statistics.median(floor)
    rows.append(("2", "floor: bash coprocess `true; echo marker`", f"{f50:.3f} ms", f"{pct(floor, .9):.3f} ms", "1.00x"))
    sb.process.create_session("bench")
    req = SessionExecuteRequest(command="true")
    xs = timed(n, lambda: sb.process.execute_session_command("bench", req))
    rows.append(("2", "Daytona sync execute_session_command", f"{statistics.median(xs):.2f} ms", f"{pct(xs, .9):.2f} ms", f"{statistics.median(xs) / f50:.1f}x"))
    sb.process.delete_session("bench")

    # 3. Big output through exec: at most what `execute` answers (64 MiB).
    out_n = min(big, 64 << 20)
    cmd = f"head -c {out_n} /dev/zero | tr '\\0' a"
    t = time.perf_counter()
    subprocess.run(["sh", "-c", cmd + " > /dev/null"], check=True)
    floor_rate = out_n / (1 << 20) / (time.perf_counter() - t)
    rows.append(("3", f"floor: `{cmd.split('|')[0].strip()} | tr` > /dev/null", f"{floor_rate:.0f} MiB/s", "", "100%"))
    t, c = time.perf_counter(), cpu_s(daemon)
    r = native_exec(cmd)
    rate, dc = out_n / (1 << 20) / (time.perf_counter() - t), cpu_s(daemon) - c
    assert len(r["stdout"]) == out_n, len(r["stdout"])
    rows.append(("3", f"tether native POST /v1/exec (JSON; daemon CPU {dc:.2f} s)", f"{rate:.0f} MiB/s", "", f"{rate / floor_rate:.0%}"))
    t, c = time.perf_counter(), cpu_s(daemon)
    res = sb.process.exec(cmd)
    rate, dc = out_n / (1 << 20) / (time.perf_counter() - t), cpu_s(daemon) - c
    assert len(res.result) == out_n, len(res.result)
    rows.append(("3", f"Daytona process.exec result (daemon CPU {dc:.2f} s)", f"{rate:.0f} MiB/s", "", f"{rate / floor_rate:.0%}"))

    # 4. Files.
    src = os.path.join(work, "src.bin")
    with open(src, "wb") as f:
        for _ in range(big >> 20):
            f.write(os.urandom(1 << 20))
    want = hashlib.sha256(open(src, "rb").read()).hexdigest()
    os.sync()  # the source's writes out of the way; copies stay in the page cache, as uploads do
    t = time.perf_counter()
    shutil.copyfile(src, os.path.join(work, "copy.bin"))
    floor_rate = big / (1 << 20) / (time.perf_counter() - t)
    rows.append(("4", "floor: copy of the file (page cache, no fsync, like tether)", f"{floor_rate:.0f} MiB/s", "", "100%"))
    t, c = time.perf_counter(), cpu_s(daemon)
    sb.fs.upload_file(src, "up.bin")
    rate, dc = big / (1 << 20) / (time.perf_counter() - t), cpu_s(daemon) - c
    assert hashlib.sha256(open(os.path.join(work, "up.bin"), "rb").read()).hexdigest() == want
    rows.append(("4", f"Daytona fs.upload_file (local path; daemon CPU {dc:.2f} s)", f"{rate:.0f} MiB/s", "", f"{rate / floor_rate:.0%}"))
    dst = os.path.join(tempfile.mkdtemp(prefix="tether-daytona-dl-"), "down.bin")
    t, c = time.perf_counter(), cpu_s(daemon)
    sb.fs.download_file("up.bin", dst)
    rate, dc = big / (1 << 20) / (time.perf_counter() - t), cpu_s(daemon) - c
    assert hashlib.sha256(open(dst, "rb").read()).hexdigest() == want
    shutil.rmtree(os.path.dirname(dst))
    rows.append(("4", f"Daytona fs.download_file (to a local path; daemon CPU {dc:.2f} s)", f"{rate:.0f} MiB/s", "", f"{rate / floor_rate:.0%}"))
    return rows


if __name__ == "__main__":
    main()
