#!/usr/bin/env python3
"""Prints the chaos matrix (client x fault) from the results the chaos tests
append, one JSON object per line, to $CHAOS_RESULTS:

    {"client": "rust", "fault": "reset", "pass": true,
     "reconnect_ms": 212.5, "detail": "20000 lines once each, stdin sha256 ok"}

`reconnect_ms` is the time from the moment the network was back (the fault
proxy's restore, or the restarted daemon listening) to the client showing
progress again (the next line of output); null where it does not apply.
A cell run several times shows every run's result: the worst reconnect time
and how many runs passed. Exits non-zero if a cell failed or is missing
(a client or fault given in --expect that reported nothing).

Usage: chaos-table.py RESULTS [--expect client,... --faults fault,...]
"""
import json
import sys

CLIENTS = ["exec", "exec-it", "attach", "browser", "rust", "langsmith", "python"]
FAULTS = ["reset", "freeze", "refuse", "repeated", "restart", "typing"]


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1]
    expect = CLIENTS
    faults = FAULTS
    if "--expect" in argv:
        expect = argv[argv.index("--expect") + 1].split(",")
    if "--faults" in argv:
        faults = argv[argv.index("--faults") + 1].split(",")
    cells = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                r = json.loads(line)
                cells.setdefault((r["client"], r["fault"]), []).append(r)
    except FileNotFoundError:
        pass
    ok = True
    width = max(len(f) for f in faults) + 2
    colw = 18
    print()
    print("chaos matrix: pass/runs, worst reconnect time once the network is back")
    print("client".ljust(10) + "".join(f.ljust(colw) for f in faults))
    for c in expect:
        row = c.ljust(10)
        for fa in faults:
            runs = cells.get((c, fa))
            if not runs:
                row += "-".ljust(colw)
                ok = False
                continue
            passed = sum(1 for r in runs if r.get("pass"))
            times = [r["reconnect_ms"] for r in runs if r.get("reconnect_ms") is not None]
            t = f" {max(times) / 1000:.2f}s" if times else ""
            mark = "ok" if passed == len(runs) else "FAIL"
            row += f"{mark} {passed}/{len(runs)}{t}".ljust(colw)
            if passed != len(runs):
                ok = False
        print(row)
    failed = [r for rs in cells.values() for r in rs if not r.get("pass")]
    for r in failed:
        print(f"  FAILED {r['client']} x {r['fault']}: {r.get('detail', '')}")
    _ = width
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
