"""Writes docs/API.md, the API reference, from the package's docstrings.

python docs/gen_api.py          # rewrite docs/API.md
python docs/gen_api.py --check  # exit 1 if it is out of date (tests do)
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import tether  # noqa: E402

# The order of the reference: the clients first, then what they return.
SECTIONS = [
    ("Clients", ["Client", "AsyncClient", "Options"]),
    (
        "Commands",
        [
            "CommandHandle",
            "AsyncCommandHandle",
            "ExecResult",
            "OutputEvent",
            "GapEvent",
            "ScreenEvent",
            "ResizedEvent",
        ],
    ),
    ("Subprocess-like", ["Popen", "AsyncPopen"]),
    ("Named shells and terminals", ["Shell", "AsyncShell", "PtyHandle", "AsyncPtyHandle"]),
    ("Files", ["Files", "AsyncFiles", "FileStat"]),
    (
        "What the daemon reports",
        ["CommandInfo", "ExitStatus", "StreamInfo", "ShellInfo", "HistoryEntry", "Limits", "TermSize"],
    ),
]


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "").strip()


def _sig(fn: object) -> str:
    try:
        return str(inspect.signature(fn))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"


def render() -> str:
    out = [
        "# tether Python SDK: API reference",
        "",
        "Generated from the docstrings by `python docs/gen_api.py`; do not edit.",
        "",
    ]
    for title, names in SECTIONS:
        out += [f"## {title}", ""]
        for name in names:
            obj = getattr(tether, name, None)
            if obj is None:
                continue
            kind = "class" if inspect.isclass(obj) else "function"
            out += [f"### `{name}`", ""]
            if kind == "class":
                fields = getattr(obj, "__dataclass_fields__", None)
                if fields:
                    out += ["```python", f"{name}({', '.join(fields)})", "```", ""]
            out += [_doc(obj), ""]
            if not inspect.isclass(obj):
                continue
            for attr, member in sorted(vars(obj).items()):
                if attr.startswith("_") and attr not in ("__iter__", "__aiter__"):
                    continue
                if isinstance(member, property):
                    out += [f"- **`{attr}`** (property): {_doc(member) or '(undocumented)'}", ""]
                elif inspect.isfunction(member):
                    prefix = (
                        "async "
                        if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
                        else ""
                    )
                    out += [
                        f"#### `{prefix}{name}.{attr}{_sig(member)}`",
                        "",
                        _doc(member) or "(undocumented)",
                        "",
                    ]
    out += ["## Errors", ""]
    for name in sorted(
        n
        for n in tether.__all__
        if isinstance(getattr(tether, n), type) and issubclass(getattr(tether, n), BaseException)
    ):
        cls = getattr(tether, name)
        bases = ", ".join(b.__name__ for b in cls.__bases__)
        out += [f"- **`{name}`** ({bases}): {_doc(cls)}", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    path = HERE / "API.md"
    text = render()
    if "--check" in sys.argv:
        if not path.exists() or path.read_text() != text:
            print("docs/API.md is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
