"""The menu's tests drive the controller against tests/menu_fakes.FakeEngine; these checks
keep that double from drifting away from the real Engine (issue 13): every engine method
the screens call exists on both, and every call the screens make binds to the real
method's signature as it binds to the fake's."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from maintenance.engine import Engine

menu_fakes = pytest.importorskip("tests.menu_fakes", reason="needs urwid")
FakeEngine = menu_fakes.FakeEngine

SCREENS = Path(__file__).resolve().parent.parent / "screens"


def engine_calls() -> list[tuple[str, str, ast.Call | None]]:
    """(file:line, method, the call or None) for each ``self.engine.NAME`` in screens/."""
    out: list[tuple[str, str, ast.Call | None]] = []
    for f in sorted(SCREENS.glob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "engine" and isinstance(node.value.value, ast.Name)
                    and node.value.value.id == "self"):
                out.append((f"{f.name}:{node.lineno}", node.attr, calls.get(id(node))))
    return out


def test_the_screens_call_the_engine() -> None:
    names = {name for _, name, _ in engine_calls()}
    assert {"status", "create", "restore", "rollback", "compact"} <= names, names


@pytest.mark.parametrize(("where", "name", "call"), engine_calls(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_each_engine_call_fits_engine_and_fake(where: str, name: str,
                                               call: ast.Call | None) -> None:
    real = getattr(Engine, name, None)
    fake = getattr(FakeEngine, name, None)
    assert callable(real), f"{where}: Engine has no method {name}"
    assert callable(fake), f"{where}: FakeEngine has no method {name}"
    if call is None:  # passed on, not called here
        return
    if any(isinstance(a, ast.Starred) for a in call.args) or \
            any(k.arg is None for k in call.keywords):
        return  # *args / **kwargs: cannot bind statically
    args: list[Any] = [object()] * len(call.args)
    kwargs = {k.arg: object() for k in call.keywords if k.arg}
    for label, fn in (("Engine", real), ("FakeEngine", fake)):
        try:
            inspect.signature(fn).bind(object(), *args, **kwargs)
        except TypeError as e:
            pytest.fail(f"{where}: self.engine.{name}(...) does not fit {label}.{name}"
                        f"{inspect.signature(fn)}: {e}")


def test_the_fakes_methods_are_the_engines() -> None:
    """What FakeEngine offers, Engine offers under the same name and parameters (the fake
    may take fewer keywords only through **kwargs)."""
    for name, fn in inspect.getmembers(FakeEngine, inspect.isfunction):
        if name.startswith("_"):
            continue
        real = getattr(Engine, name, None)
        assert callable(real), f"FakeEngine.{name} has no counterpart in Engine"
        real_params = inspect.signature(real).parameters
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name == "self":
                continue
            assert p.name in real_params, f"FakeEngine.{name}: Engine.{name} has no {p.name}"
            assert real_params[p.name].kind == p.kind, f"{name}({p.name}): kind differs"


def test_every_notice_the_engine_makes_has_a_code_and_words() -> None:
    """Notices are data: the engine gives a code and figures, the CLI and the menu word
    them (maintenance/wording.py, screens/notice_words.py); scripts (--json) key on the
    code. Every code made has words and is listed in docs/ARCHITECTURE.md."""
    from maintenance.wording import WORDS

    root = Path(__file__).resolve().parent.parent
    made, bad = set(), []
    for f in sorted([*(root / "maintenance").glob("*.py"), *(root / "screens").glob("*.py")]):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Notice":
                code = node.args[1] if len(node.args) >= 2 else None
                if isinstance(code, ast.Constant) and isinstance(code.value, str):
                    made.add(code.value)
                else:
                    bad.append(f"{f.name}:{node.lineno}")
    assert bad == [], f"a Notice without a literal code: {bad}"
    assert {"low-space", "trial", "ram-critical"} <= made  # the walk found the engine's
    assert made - {"boot-failed"} <= set(WORDS), made - set(WORDS)  # boot-failed: the menu's
    doc = (root / "docs" / "ARCHITECTURE.md").read_text()
    assert [c for c in sorted(made) if f"`{c}`" not in doc] == []
