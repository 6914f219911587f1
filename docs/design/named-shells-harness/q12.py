from sh2 import *
s = Shell()
show(s, "exec 3>/tmp/sh/fd3.txt; echo via3 >&3; ls -l /proc/$$/fd | grep -c fd3.txt")
show(s, "echo next-ok; cat /tmp/sh/fd3.txt; ls -l /proc/$$/fd | awk '{print $9,$10,$11}' | tr '\\n' ' '")
show(s, "(exit 4); echo sub=$?; echo x | exit 5; echo pipe=$?")
show(s, "mkdir -p /tmp/sh/gone && cd /tmp/sh/gone && rmdir /tmp/sh/gone"); show(s, "pwd; echo rc=$?")
show(s, "cd /tmp; exec sleep 0.1")
