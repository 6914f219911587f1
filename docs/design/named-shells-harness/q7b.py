import sys
from sh2 import *
s = Shell(use_pty=(sys.argv[1]=="pty"))
if sys.argv[2] == "+m": show(s, "set +m")
show(s, "sleep 0.2 & (sleep 0.2; kill -TERM $$ 2>/dev/null; exit 0) & sleep 1000 & echo $! > /tmp/sh/bgpid; (sleep 0.3; kill -9 $BASHPID) & echo started")
show(s, "sleep 0.6; echo fg-done")    # notifications for the dying jobs happen while this runs?
show(s, "kill -TERM $(cat /tmp/sh/bgpid); sleep 0.3; echo killed-bg")
show(s, "sleep 0.1; echo x")
show(s, "false & wait $!; echo waited=$?")
print("shell_log:", s.shell_log[-400:])
s.close()
