import os, subprocess, time, signal, sys, select
mode = sys.argv[1]  # eval|source|wrap
inter = sys.argv[2] == "i"
cmds = {"loop": "while :; do :; done", "sleep": "sleep 100", "pipe": "yes | head -c 100000000000 | wc -c", "sub": "( sleep 100 )", "func": "f(){ while :; do :; done; }; f; echo after-f", "read": "read x"}
def runline(name):
    open(f"/tmp/sh/c_{name}.sh","w").write(cmds[name] + "\necho STILL-RAN-NEXT-LINE\n")
    if mode == "eval": r = f'eval "$(</tmp/sh/c_{name}.sh)"'
    elif mode == "source": r = f'. /tmp/sh/c_{name}.sh'
    else: r = f'__f=/tmp/sh/c_{name}.sh; . /tmp/sh/wrap.sh'
    return f'{{ echo S >&3; {r} 3>&-; }} </dev/null >/tmp/sh/o_{name} 2>/tmp/sh/e_{name}; echo "E $? $x" >&3\n'
open("/tmp/sh/wrap.sh","w").write('eval "$(<"$__f")"\n')
cr, cw = os.pipe(); sr, sw = os.pipe()
args = ["bash","--norc","--noprofile"] + (["--noediting","-i"] if inter else [])
p = subprocess.Popen(args, stdin=cr, stdout=subprocess.DEVNULL, stderr=open("/tmp/sh/shell.err","w"), close_fds=False,
    start_new_session=True, preexec_fn=lambda: os.dup2(sw,3))
os.close(cr); os.close(sw)
setup = 'PS1= PS2=; set +H +o history; unset HISTFILE; x=keep; PROMPT_COMMAND=\'echo "PC $?" >&3\'\n' if inter else 'x=keep\n'
os.write(cw, setup.encode())
def readst(t):
    end=time.time()+t; buf=b""
    while time.time()<end:
        r,_,_=select.select([sr],[],[],0.05)
        if r:
            b=os.read(sr,1000)
            if not b: return buf.decode()+"<EOF>"
            buf+=b
    return buf.decode()
print("setup:", readst(0.3).split())
for name in sys.argv[3:]:
    os.write(cw, runline(name).encode()); time.sleep(0.5)
    st0 = readst(0.1)
    target = os.environ.get("TARGET","pgrp")
    if target == "pgrp": os.killpg(p.pid, signal.SIGINT)
    else: os.kill(p.pid, signal.SIGINT)
    st = readst(1.0)
    alive = p.poll() is None
    print(f"{mode:6} {'i' if inter else 'n'} {name:5}: before={st0.split()} after={st.split()} alive={alive} out={open(f'/tmp/sh/o_{name}').read()!r} err={open(f'/tmp/sh/e_{name}').read()!r}")
    if not alive: break
os.write(cw, b'{ echo "x=$x"; } >&3\n'); print("state:", readst(0.3).split())
p.kill()
