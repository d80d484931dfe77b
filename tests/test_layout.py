"""The code's shape (docs/ARCHITECTURE.md), kept by tests so it does not erode: modules of
one concern each, small enough to read at a glance; the engine below the CLI and the menu,
never talking to a terminal itself. (tests/test_menu_start.py: the engine never imports
the menu; tests/test_fakes.py: notices are data, the menu's test double cannot drift.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400  # issue 13: no file over ~400 lines
# the CLI's modules in maintenance/: they parse, print and word; the rest is the engine
CLI = {"cli", "commands", "output", "wording", "demo"}


def is_cli(f: Path) -> bool:
    return f.stem in CLI or f.stem.endswith("cli")


def test_no_module_is_over_400_lines() -> None:
    files = [*ROOT.glob("maintenance/*.py"), *ROOT.glob("screens/*.py"),
             *ROOT.glob("dracut-module/90ibi/*.sh"), *ROOT.glob("systemd/*.sh")]
    assert len(files) > 50, "the walk found the modules"
    long = {str(f.relative_to(ROOT)): n for f in files
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concern: {long}"


def test_the_engine_never_prints_nor_imports_the_cli() -> None:
    """The engine returns data and raises typed errors; only the CLI's modules write to
    the terminal, and the engine does not depend on them."""
    bad = []
    engine = [f for f in sorted(ROOT.glob("maintenance/*.py")) if not is_cli(f)]
    assert len(engine) > 40 and not any(f.stem == "engine" and is_cli(f) for f in engine)
    for f in engine:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                bad.append(f"{f.name}:{node.lineno}: print()")
            elif (isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr")
                  and getattr(node.value, "id", "") == "sys"):
                bad.append(f"{f.name}:{node.lineno}: sys.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                bad += [f"{f.name}:{node.lineno}: imports {n}" for n in names
                        if n and is_cli(Path(n + ".py"))]
    assert bad == [], bad
