"""The API reference (docs/API.md) is generated from the docstrings and up
to date, and every public name is documented."""

import subprocess
import sys
import typing
from pathlib import Path

import tether

HERE = Path(__file__).resolve().parent.parent


def test_the_api_reference_is_up_to_date():
    r = subprocess.run(
        [sys.executable, str(HERE / "docs" / "gen_api.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "(undocumented)" not in (HERE / "docs" / "API.md").read_text()


def test_every_public_name_has_a_docstring():
    # Type aliases (Command, Event: Unions) cannot carry one.
    names = [n for n in tether.__all__ if typing.get_origin(getattr(tether, n)) is not typing.Union]
    missing = [
        n
        for n in names
        if not isinstance(getattr(tether, n), (int, str))
        and not (getattr(getattr(tether, n), "__doc__", None) or "").strip()
    ]
    assert missing == []
