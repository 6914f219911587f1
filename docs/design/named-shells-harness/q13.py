from sh2 import *
s = Shell(); lost = 0; extraR = 0
for i in range(300):
    os.kill(s.p.pid, signal.SIGINT)            # stray interrupt just before a submission
    n, fo, fe, fi, line = s.submit("echo hi")
    while True:
        r = s.rec(2)
        if r is None: print("hang at", i); break
        if r[0] == "R":
            extraR += 1
            # was our line discarded? if no S arrives shortly, resend it
            r2 = s.rec(0.2)
            if r2 is None: lost += 1; s.send(line); continue
            r = r2
        if r[0] == "S": os.close(fi); fi = None
        if r[0] == "E": break
    for f in (fo, fe): os.close(f)
    if fi is not None: os.close(fi)
print("iterations 300, R records seen:", extraR, "lines discarded (resent):", lost, "shell alive:", s.p.poll() is None)
s.close()
