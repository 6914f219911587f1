from sh2 import *
import statistics
def pct(v, p): v = sorted(v); return v[int(len(v)*p)-1] * 1e6
s = Shell(); lat = []
for i in range(1000):
    t = time.perf_counter(); n, fo, fe, fi, _ = s.submit("true")
    r = s.rec(5); assert r[0] == "S"; os.close(fi); r = s.rec(5); assert r[0] == "E", r
    lat.append(time.perf_counter() - t)
    for f in (fo, fe): os.close(f)
    for x in ("sh", "in", "out", "err"): os.unlink(f"{s.dir}/{n}.{x}")
print(f"named shell: p50 {pct(lat,.5):.0f} us  p99 {pct(lat,.99):.0f} us")
s.close()
# raw coprocess: bash reading commands from a pipe, marker on stdout
p = subprocess.Popen(["bash", "--norc", "--noprofile"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
lat = []
for i in range(1000):
    t = time.perf_counter(); p.stdin.write(b"true; echo __done $?\n")
    buf = b""
    while not buf.endswith(b"\n"): buf += p.stdout.read(1)
    lat.append(time.perf_counter() - t)
print(f"raw coprocess: p50 {pct(lat,.5):.0f} us  p99 {pct(lat,.99):.0f} us")
p.kill()
