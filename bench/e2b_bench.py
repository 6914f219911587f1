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
import time

from benchlib import ReleaseDaemon, login_shell_floor, print_table, timed, use_venv

use_venv("e2b-venv", "e2b")

from e2b import Sandbox  # noqa: E402


def main():
    d = ReleaseDaemon()
    rows = []
    try:
        url = d.url + "/compat/e2b"
        sbx = Sandbox.connect("local", api_key=d.token, api_url=url, sandbox_url=url)
        f50, f90 = timed(login_shell_floor)
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
        d.close()
    print_table("E2B dialect", rows)


if __name__ == "__main__":
    main()
