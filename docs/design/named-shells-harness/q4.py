import sys
from sh2 import *
use_pty = sys.argv[1] == "pty"
s = Shell(use_pty=use_pty)
print("MODE", sys.argv[1])
show(s, "x=keep; sleep 1000 & echo bg=$!")
intr = [(0.5, lambda s: s.interrupt())]
for c in ["sleep 100; echo next", "yes | head -c 1000000000000 | wc -c; echo next", "while :; do :; done; echo next",
          "( sleep 100 ); echo next", "f(){ while :; do :; done; }; f; echo next", "read v; echo next",
          "python3 -c 'import time; time.sleep(100)'; echo next", "bash -c 'while :; do :; done'; echo next"]:
    show(s, c, close_stdin=False, actions=intr, timeout=5)
r = show(s, "trap '' INT; sleep 100; echo next", actions=intr, timeout=2)
if r["status"] == "TIMEOUT":
    pass
show(s, 'trap - INT; echo "x=$x"; jobs -l; ps -o pid,pgid,stat,args --sid $$ | grep -v " ps "')
print("shell_log:", s.shell_log[-300:])
print("closed:", s.close())
