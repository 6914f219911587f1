"""What the dialect benchmarks share: a release daemon with an empty HOME
(so a login shell's profile is the same small one for the daemon's
commands and for the floor), percentiles of a timed call, the floor of a
login shell, and the table."""
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_venv(name, module):
    """Re-executes under target/<name>/bin/python unless `module` imports."""
    venv_py = os.path.join(ROOT, "target", name, "bin", "python")
    try:
        __import__(module)
    except ImportError:
        if os.path.exists(venv_py) and sys.executable != venv_py:
            os.execv(venv_py, [venv_py, *sys.argv])
        sys.exit(f"the venv target/{name} is missing: run the suite's script under scripts/ once")


def timed(f, n=300):
    """p50 and p90 of `f()` in ms, after 20 warm-up calls."""
    for _ in range(20):
        f()
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    return statistics.median(xs), xs[int(len(xs) * 0.9)]


class ReleaseDaemon:
    """target/release/tether on port 0 with a fresh HOME and files root."""

    def __init__(self):
        os.environ["HOME"] = tempfile.mkdtemp(prefix="tether-bench-home-")
        self.token = secrets.token_hex(16)
        self.work = tempfile.mkdtemp(prefix="tether-bench-")
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "target", "release", "tether"), "serve", "--listen", "127.0.0.1:0",
             "--files-root", self.work],
            env=dict(os.environ, TETHER_TOKEN=self.token), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url = self.proc.stdout.readline().split("listening on ")[1].strip()

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def login_shell_floor():
    """posix_spawn `/bin/bash -l -c true` + waitpid: what every dialect
    command without a shell of its own costs at least."""
    pid = os.posix_spawn("/bin/bash", ["/bin/bash", "-l", "-c", "true"], os.environ)
    os.waitpid(pid, 0)


def print_table(title, rows):
    print(f"\n{title}, {os.cpu_count()} cores\n")
    print("| what | p50 / rate | p90 | vs floor |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
