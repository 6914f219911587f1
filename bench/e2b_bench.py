#!/usr/bin/env python3
"""The E2B dialect's benchmark: the unchanged E2B Python SDK (2.63.0)
against ONE release tether daemon this script starts, beside the floor
measured in the same run.

Rows: `commands.run("true")` round trip (p50/p90) against the floor the SDK
itself implies (`/bin/bash -l -c true`, spawned and waited), 64 MiB through
`files.write` and `files.read` (checked), and 64 MiB of stdout through
`commands.run` (checked). The daemon and the floor get a fresh, empty HOME,
so a login shell's profile is the same small one for both.

Run: `cargo build --release -p tether && python3 bench/e2b_bench.py`
(re-executes itself with target/e2b-venv, made by scripts/e2b-tests.sh).
"""
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(ROOT, "target", "e2b-venv", "bin", "python")

try:
    from e2b import Sandbox
except ImportError:
    if os.path.exists(VENV_PY) and sys.executable != VENV_PY:
        os.execv(VENV_PY, [VENV_PY, *sys.argv])
    sys.exit("the E2B venv is missing: run bash scripts/e2b-tests.sh once")


def timed(f, n=300):
    for _ in range(20):
        f()
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    return statistics.median(xs), xs[int(len(xs) * 0.9)]


def main():
    home = tempfile.mkdtemp(prefix="tether-e2b-bench-home-")
    os.environ["HOME"] = home
    token = secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="tether-e2b-bench-")
    d = subprocess.Popen(
        [os.path.join(ROOT, "target", "release", "tether"), "serve", "--listen", "127.0.0.1:0", "--files-root", work],
        env=dict(os.environ, TETHER_TOKEN=token), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = d.stdout.readline().split("listening on ")[1].strip() + "/compat/e2b"
        sbx = Sandbox.connect("local", api_key=token, api_url=url, sandbox_url=url)

        def spawn():
            pid = os.posix_spawn("/bin/bash", ["/bin/bash", "-l", "-c", "true"], os.environ)
            os.waitpid(pid, 0)

        rows = []
        f50, f90 = timed(spawn)
        rows.append(("floor: posix_spawn `bash -l -c true` + waitpid", f"{f50:.2f} ms", f"{f90:.2f} ms", "1.00x"))
        r50, r90 = timed(lambda: sbx.commands.run("true"))
        rows.append(("E2B sync `commands.run(\"true\")`", f"{r50:.2f} ms", f"{r90:.2f} ms", f"{r50 / f50:.2f}x"))
        n = 64 << 20
        data = os.urandom(n)
        t = time.perf_counter()
        sbx.files.write("b.bin", data)
        up = 64 / (time.perf_counter() - t)
        t = time.perf_counter()
        back = sbx.files.read("b.bin", format="bytes")
        down = 64 / (time.perf_counter() - t)
        assert bytes(back) == data
        t = time.perf_counter()
        r = sbx.commands.run(f"head -c {n} /dev/zero | tr '\\0' a", timeout=0)
        out = 64 / (time.perf_counter() - t)
        assert len(r.stdout) == n
        rows.append(("E2B `files.write` 64 MiB", f"{up:.0f} MiB/s", "", ""))
        rows.append(("E2B `files.read` 64 MiB", f"{down:.0f} MiB/s", "", ""))
        rows.append(("E2B `commands.run` with 64 MiB of stdout", f"{out:.0f} MiB/s", "", ""))
    finally:
        d.terminate()
        d.wait()
    print(f"\nE2B dialect, {os.cpu_count()} cores\n")
    print("| what | p50 / rate | p90 | vs floor |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
