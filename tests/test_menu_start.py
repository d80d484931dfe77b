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


def test_the_engine_package_never_imports_the_menu() -> None:
    """maintenance/ (the engine and the CLI) imports neither screens/ nor urwid, also not
    by import_module(): the menu depends on the engine, not the other way (ibi menu runs
    ibi-menu in its place)."""
    import ast

    ui = ("screens", "urwid")
    bad = []
    for f in sorted((Path(__file__).resolve().parent.parent / "maintenance").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and node.args
                  and isinstance(node.args[0], ast.Constant)
                  and getattr(node.func, "id", getattr(node.func, "attr", "")) in
                  ("import_module", "__import__")):
                names = [str(node.args[0].value)]
            bad += [f"{f.name}:{node.lineno}: {n}" for n in names  # type: ignore[attr-defined]
                    if n.split(".")[0] in ui]
    assert bad == [], bad
