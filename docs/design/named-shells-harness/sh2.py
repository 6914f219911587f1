# Harness for the recommended mechanism: interactive bash, PTY as controlling tty, control pipe on fd 0,
# status pipe on fd 3, per-command FIFOs, PROMPT_COMMAND completion records.
import os, pty, subprocess, time, signal, fcntl, termios, select, tempfile, threading
HERE = os.path.dirname(os.path.abspath(__file__))
class Shell:
    def __init__(self, use_pty=False):
        self.dir = tempfile.mkdtemp(prefix="tether-sh-"); os.chmod(self.dir, 0o700)
        with open(f"{self.dir}/run", "w") as f: f.write(open(f"{HERE}/run.bash").read())
        cr, self.cw = os.pipe(); self.sr, sw = os.pipe()
        self.use_pty = use_pty
        if use_pty:
            self.m, s = pty.openpty()
            def pre(): os.setsid(); fcntl.ioctl(s, termios.TIOCSCTTY, 0); os.dup2(sw, 3)
            out = err = s
        else:
            r, w = os.pipe(); self.m = r; s = w
            def pre(): os.setsid(); os.dup2(sw, 3)
            out = err = w
        self.p = subprocess.Popen(["bash","--norc","--noprofile","--noediting","-i"], stdin=cr, stdout=out, stderr=err,
                                  close_fds=False, preexec_fn=pre, cwd="/tmp", env=dict(os.environ, PS1="", PS2=""))
        os.close(cr); os.close(sw); os.close(s)
        self.shell_log = b""; threading.Thread(target=self._drain, daemon=True).start()
        self.sbuf = b""; self.n = 0
        self.send(f"__tether_D='{self.dir}'; readonly __tether_D\n" + open(f"{HERE}/boot.bash").read())
        assert self.rec(3) == ["R"], "boot"
    def _drain(self):
        while True:
            try: b = os.read(self.m, 4096)
            except OSError: return
            if not b: return
            self.shell_log += b
    def send(self, s): os.write(self.cw, s.encode())
    def rec(self, t):
        """next status record (list of fields) or None on timeout, 'EOF' on shell exit"""
        end = time.time() + t
        while b"\0" not in self.sbuf:
            left = end - time.time()
            if left <= 0: return None
            if select.select([self.sr], [], [], left)[0]:
                b = os.read(self.sr, 4096)
                if not b: return "EOF"
                self.sbuf += b
        r, self.sbuf = self.sbuf.split(b"\0", 1)
        return r.decode(errors="replace").split(" ", 3)
    def submit(self, code):
        if isinstance(code, str): code = code.encode()
        assert b"\0" not in code, "NUL in script: rejected"
        self.n += 1; n = self.n; d = self.dir
        with open(f"{d}/{n}.sh", "wb") as f: f.write(code)
        for x in ("in", "out", "err"): os.mkfifo(f"{d}/{n}.{x}", 0o600)
        fo = os.open(f"{d}/{n}.out", os.O_RDONLY | os.O_NONBLOCK)
        fe = os.open(f"{d}/{n}.err", os.O_RDONLY | os.O_NONBLOCK)
        fi = os.open(f"{d}/{n}.in", os.O_RDWR)
        line = (f"\\__tether_s {n}; {{ \\__tether_b; \\. \"$__tether_D/run\" 3>&-; }} "
                f"<\"$__tether_D/{n}.in\" >\"$__tether_D/{n}.out\" 2>\"$__tether_D/{n}.err\"\n")
        self.send(line)
        return n, fo, fe, fi, line
    def interrupt(self, sig=signal.SIGINT):
        if self.use_pty:
            fg = os.tcgetpgrp(self.m)
            os.killpg(fg, sig); return "bash" if fg == self.p.pid else fg
        os.killpg(self.p.pid, sig); return "pgrp"
    def run(self, code, stdin=b"", close_stdin=True, timeout=10, actions=(), wait_eof=0.0):
        n, fo, fe, fi, line = self.submit(code)
        if stdin: os.write(fi, stdin)
        out = {fo: b"", fe: b""}; res = dict(n=n); t0 = time.time(); acts = sorted(actions, key=lambda a: a[0])
        def pump(t):
            r = select.select([fo, fe], [], [], t)[0]
            for f in r:
                try:
                    b = os.read(f, 65536)
                    if b: out[f] += b
                except BlockingIOError: pass
        while True:
            while acts and acts[0][0] <= time.time() - t0:
                res.setdefault("actions", []).append(acts.pop(0)[1](self))
            pump(0)
            r = self.rec(0.01)
            if r is None:
                if time.time() - t0 > timeout: res["status"] = "TIMEOUT"; break
                continue
            if r == "EOF": res["status"] = ("shell-exit", self.p.wait()); break
            if r[0] == "S":
                res["started"] = round(time.time() - t0, 4)
                if close_stdin: os.close(fi); fi = None
            elif r[0] == "E": res["status"] = (int(r[2]), r[3]); break
            elif r[0] == "R": res.setdefault("stray_R", 0); res["stray_R"] += 1
        # after E: read until EAGAIN (no grace needed for foreground output); note EOF vs writers still open
        eof = {}
        for f in (fo, fe):
            while True:
                try: b = os.read(f, 65536)
                except BlockingIOError: eof[f] = False; break
                if not b: eof[f] = True; break
                out[f] += b
        res["eof"] = (eof[fo], eof[fe])
        for f in (fo, fe): os.close(f)
        if fi is not None: os.close(fi)
        res["out"], res["err"] = out[fo], out[fe]; res["t"] = round(time.time() - t0, 4)
        return res
    def close(self):
        # kill every process of the shell's session (detached = setsid'ed ones survive)
        sid = self.p.pid; killed = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit(): continue
            try:
                st = open(f"/proc/{pid}/stat").read(); f = st[st.rindex(")")+2:].split()
                if int(f[3]) == sid: os.kill(int(pid), signal.SIGKILL); killed.append(int(pid))
            except (FileNotFoundError, ProcessLookupError, ValueError): pass
        try: self.p.wait(2)
        except Exception: pass
        return killed
def show(s, code, **kw):
    r = s.run(code, **kw)
    keep = {k: r[k] for k in ("n","status","out","err","eof","t") if k in r}
    for k in ("actions","stray_R"):
        if k in r: keep[k] = r[k]
    print(f"$ {code!r:.90}\n   -> {keep}")
    return r
