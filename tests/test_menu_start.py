"""What the menu's process loads before its first screen (issue 12: import only what the
first screen needs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
from importlib import import_module
import_module("screens").lean_urwid()
import screens.app
from screens import OPTIONAL_LOOPS
print(sorted(m for m in OPTIONAL_LOOPS if sys.modules.get(m) is not None))
print("urwid" in sys.modules)
"""


def test_the_menu_loads_no_optional_event_loop_library() -> None:
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "True"]


def test_a_library_already_loaded_is_left_alone() -> None:
    import screens

    probe = ("import sys, types; sys.modules['trio'] = types.ModuleType('trio'); "
             "import screens; screens.lean_urwid(); print(sys.modules['trio'] is not None, "
             "sys.modules['gi'] is None)")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]
    assert "trio" in screens.OPTIONAL_LOOPS
