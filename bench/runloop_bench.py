#!/usr/bin/env python3
"""The Runloop dialect's benchmark: the unchanged runloop-api-client
(3.0.0) against ONE release tether daemon this script starts, beside the
floor measured in the same run.

Rows: `cmd.exec("true")` round trip (p50/p90; `execute_async` then one
long-poll `wait_for_status`) against the floor the dialect implies
(`/bin/bash -l -c true`, spawned and waited); the same in a named shell
(no new process: against the floor of the one-process exec); 64 MiB of
stdout streamed through the `stdout` callback (checked); 64 MiB through
`file.upload` and `file.download` (checked).

Run: `cargo build --release -p tether && python3 bench/runloop_bench.py`
(re-executes itself with target/runloop-3-venv, made by
scripts/runloop-tests.sh).
"""
import os
import time

from benchlib import ReleaseDaemon, login_shell_floor, print_table, timed, use_venv

use_venv("runloop-3-venv", "runloop_api_client")

from runloop_api_client import RunloopSDK  # noqa: E402


def main():
    d = ReleaseDaemon()
    rows = []
    try:
        sdk = RunloopSDK(bearer_token=d.token, base_url=d.url + "/compat/runloop")
        devbox = sdk.devbox.from_id("local")
        f50, f90 = timed(login_shell_floor)
        rows.append(("floor: posix_spawn `bash -l -c true` + waitpid", f"{f50:.2f} ms", f"{f90:.2f} ms", "1.00x"))
        r50, r90 = timed(lambda: devbox.cmd.exec("true"))
        rows.append(('Runloop `cmd.exec("true")`', f"{r50:.2f} ms", f"{r90:.2f} ms", f"{r50 / f50:.2f}x"))
        s50, s90 = timed(lambda: devbox.cmd.exec("true", extra_body={"shell_name": "bench"}))
        rows.append(('Runloop `cmd.exec("true")` in a named shell', f"{s50:.2f} ms", f"{s90:.2f} ms", f"{s50 / f50:.2f}x"))
        n = 64 << 20
        got = [0]

        def count(text):
            got[0] += len(text)

        t = time.perf_counter()
        r = devbox.cmd.exec(f"head -c {n} /dev/zero | tr '\\0' a", stdout=count)
        rate = 64 / (time.perf_counter() - t)
        assert r.exit_code == 0 and got[0] == n, got
        rows.append(("Runloop 64 MiB of stdout through the `stdout` callback", f"{rate:.0f} MiB/s", "", ""))
        data = os.urandom(n)
        t = time.perf_counter()
        devbox.file.upload(path="b.bin", file=data)
        up = 64 / (time.perf_counter() - t)
        t = time.perf_counter()
        back = devbox.file.download(path="b.bin")
        down = 64 / (time.perf_counter() - t)
        assert back == data
        rows.append(("Runloop `file.upload` 64 MiB", f"{up:.0f} MiB/s", "", ""))
        rows.append(("Runloop `file.download` 64 MiB", f"{down:.0f} MiB/s", "", ""))
        sdk.close()
    finally:
        d.close()
    print_table("Runloop dialect", rows)


if __name__ == "__main__":
    main()
