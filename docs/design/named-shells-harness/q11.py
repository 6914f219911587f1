from sh2 import *
def procs(sid):
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            st = open(f"/proc/{pid}/stat").read(); f = st[st.rindex(")")+2:].split()
            if int(f[3]) == sid: out[int(pid)] = int(f[1])   # pid -> ppid
        except (FileNotFoundError, ValueError): pass
    return out
def command_pids(s, snapshot):
    """processes created since S(N) whose ancestry reaches bash without crossing a pre-existing process"""
    ps = procs(s.p.pid); res = []
    for pid in ps:
        if pid == s.p.pid or pid in snapshot: continue
        a = ps.get(pid)
        while a in ps and a != s.p.pid and a not in snapshot: a = ps[a]
        if a == s.p.pid: res.append(pid)
    return res
s = Shell()
show(s, "sleep 1000 & echo server-like bg job $!")
snap = set(procs(s.p.pid))
def escalate(s):
    pids = command_pids(s, snap)
    for p in pids: os.kill(p, signal.SIGKILL)
    return ("SIGKILL", pids)
intr = [(0.3, lambda s: s.interrupt()), (0.8, escalate)]
show(s, "trap '' INT; sleep 100; echo next-after-kill; trap - INT", actions=intr)
snap = set(procs(s.p.pid))
show(s, "trap '' INT; (sleep 100 & wait); echo next2; trap - INT", actions=intr)
snap = set(procs(s.p.pid))
r = show(s, "trap 'echo trapped' INT; while :; do :; done", actions=intr, timeout=2)
print("  -> builtin loop with INT trapped: cannot be stopped; daemon must kill the shell. bg job still alive:", [p for p in procs(s.p.pid)])
print("closed:", s.close())
