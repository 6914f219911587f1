#!/usr/bin/env python3
"""The physical limits of a pseudo-terminal, for tether-bench.

Usage:
  pty_floor.py echo N WARMUP FLUSH_EVERY
      Runs `cat` on a new PTY (default termios: canonical mode, echo on)
      and, WARMUP + N times, writes one byte "a" to the master and reads
      the master until the line discipline's echo "a" is back. Prints the
      N measured round trips in nanoseconds, one per line. After every
      FLUSH_EVERY typed bytes it types "\\r" and reads the echoed "\\r\\n" and
      cat's line (k + 4 bytes), so the canonical line (4095 bytes at most)
      never fills.
  pty_floor.py cat FILE
      Runs `cat FILE` on a new PTY and reads the master with os.read(64 KiB)
      until the terminal's end (EIO once cat exits). Prints "BYTES NANOS":
      the bytes read and the time from before the spawn to the end.

Both read the master directly, the way tether's actor does, with no relay
in between: this is the kernel's PTY path plus a Python loop (a few
microseconds per read). The bench compares tether and terminado with it.
"""

import errno
import os
import subprocess
import sys
import time


def spawn(argv):
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    return master, proc


def read_exactly(master, n):
    got = b""
    while len(got) < n:
        got += os.read(master, 65536)
    return got


def echo(n, warmup, flush_every):
    master, proc = spawn(["cat"])
    samples = []
    typed = 0
    try:
        for i in range(warmup + n):
            if typed == flush_every:
                os.write(master, b"\r")
                read_exactly(master, typed + 4)
                typed = 0
            t = time.perf_counter_ns()
            os.write(master, b"a")
            got = read_exactly(master, 1)
            elapsed = time.perf_counter_ns() - t
            if got != b"a":
                sys.exit(f"expected the echo b'a', got {got!r}")
            typed += 1
            if i >= warmup:
                samples.append(elapsed)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    sys.stdout.write("".join(f"{s}\n" for s in samples))


def cat(path):
    t = time.perf_counter_ns()
    master, proc = spawn(["cat", path])
    total = 0
    while True:
        try:
            b = os.read(master, 65536)
        except OSError as e:
            if e.errno == errno.EIO:
                break
            raise
        if not b:
            break
        total += len(b)
    elapsed = time.perf_counter_ns() - t
    proc.wait()
    os.close(master)
    print(total, elapsed)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "echo":
        echo(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "cat":
        cat(sys.argv[2])
    else:
        sys.exit(__doc__)
