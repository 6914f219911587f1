"""What the deploy/ tests share: the repository's paths, the daemon binary
(TETHER_BIN), the flags `tether serve` takes (read from its --help), a
checker for config files, a Dockerfile reader, and a view of the processes
of a PID namespace from the host."""
import os
import re
import shlex
import subprocess
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")


def tether_bin():
    """The daemon binary: TETHER_BIN (relative to the repository root), else
    the workspace's debug build."""
    return os.path.join(ROOT, os.environ.get("TETHER_BIN", "target/debug/tether"))


def _long_flags(help_text):
    """{flag name: takes a value} of the long options in a clap --help."""
    flags = {}
    for m in re.finditer(r"^\s+(?:-\w, )?--([a-z0-9-]+)( <[^>]+>)?", help_text, re.M):
        flags[m.group(1)] = bool(m.group(2))
    return flags


_serve_flags = None


def serve_flags():
    """{flag: takes a value} for the options of `tether serve` itself: its
    --help less the client's global options (--url, --token, ...) and
    --help."""
    global _serve_flags
    if _serve_flags is None:
        run = lambda *a: subprocess.run([tether_bin(), *a], capture_output=True, text=True, timeout=20, check=True).stdout
        serve = _long_flags(run("serve", "--help"))
        global_ = _long_flags(run("--help"))
        _serve_flags = {k: v for k, v in serve.items() if k not in global_ and k != "help"}
    return _serve_flags


def config_problems(text, include_commented=True):
    """What is wrong with a config file for `tether serve --config`: keys
    that are not long flags of `tether serve`, a switch given a non-boolean
    or an option given a boolean. With `include_commented`, lines
    `# key = value` (the example's defaults) are checked too."""
    problems = []
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return ["not TOML: %s" % e]
    items = list(doc.items())
    if include_commented:
        for line in text.splitlines():
            m = re.match(r"^#\s*([a-z][a-z0-9-]*\s*=\s*.+)$", line)
            if m:
                try:
                    items += list(tomllib.loads(m.group(1)).items())
                except tomllib.TOMLDecodeError as e:
                    problems.append("commented-out line %r is not TOML: %s" % (line, e))
    flags = serve_flags()
    for key, value in items:
        if key not in flags:
            problems.append("%r is not a flag of `tether serve`" % key)
        elif isinstance(value, bool) == flags[key]:
            problems.append("%r: %s given %r" % (key, "an option" if flags[key] else "a switch", value))
    return problems


def dockerfile_instructions(path):
    """The Dockerfile's instructions as (KEYWORD, arguments) pairs, with
    line continuations joined and comments dropped."""
    out, cur = [], ""
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if stripped.startswith("#") and not cur:
                continue
            if stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                cur += stripped[:-1] + " "
                continue
            cur += stripped
            if cur.strip():
                kw, _, args = cur.strip().partition(" ")
                out.append((kw.upper(), args.strip()))
            cur = ""
    return out


def unit_settings(path):
    """A systemd unit as {section: [(key, value), ...]} (keys repeat)."""
    sections, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                cur = sections.setdefault(line.strip("[]"), [])
            else:
                k, _, v = line.partition("=")
                cur.append((k.strip(), v.strip()))
    return sections


def exec_start_argv(unit_path):
    return shlex.split(dict(unit_settings(unit_path)["Service"])["ExecStart"])


def proc_stat(pid):
    """(state, ppid, starttime) of a host pid, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def namespace_processes(pid):
    """{host pid: (state, comm)} of every process in the PID namespace of
    host pid `pid` (read from the host's /proc)."""
    try:
        ns = os.readlink("/proc/%d/ns/pid" % pid)
    except OSError:
        return {}
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        p = int(name)
        try:
            if os.readlink("/proc/%d/ns/pid" % p) != ns:
                continue
            with open("/proc/%d/comm" % p) as f:
                comm = f.read().strip()
        except OSError:
            continue
        st = proc_stat(p)
        if st:
            out[p] = (st[0], comm)
    return out
