"""The end-to-end menu tests' kit (for tests/test_menu_e2e.py and tests/test_menu_e2e_stack.py;
not collected itself): the ``_tools`` fixture that skips without pexpect and pyte (autouse in
the modules that bind it), the menu's arguments, the tree the base image is made of, a change
made in the writable layer, and the ``store`` fixture: a real store built by the engine. A test
module binds the fixtures to names of its own, where pytest finds them. The pseudo-terminal
driver is tests/menu_tui.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maintenance.engine import Engine
from tests.menu_tui import missing_tools


@pytest.fixture(autouse=True)
def _tools() -> None:
    why = missing_tools()
    if why:
        if os.environ.get("IBI_REQUIRE_ALL") == "1":
            pytest.fail(f"required capability missing: {why}")
        pytest.skip(why)


def menu_args(data: Path, tmp: Path) -> list[str]:
    """The menu on ``data``; root's password is read from ``tmp/system/etc/shadow`` (none
    unless a test writes one), not from the host's."""
    (tmp / "system" / "etc").mkdir(parents=True, exist_ok=True)
    return ["--data", str(data), "--run-dir", str(tmp / "run"), "--decision",
            str(tmp / "decision"), "--log", str(tmp / "menu.log"), "--root", str(tmp / "system")]


def tree(root: Path) -> None:
    for d in ("etc/app", "usr/bin", "srv", "home", "var/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("base-host\n")
    (root / "etc/app/main.conf").write_text("level = 1\n")
    (root / "usr/bin/tool").write_text("#!/bin/sh\necho tool\n")
    (root / "var/lib/state").write_text("1\n")


def change(eng: Engine, rel: str, text: str) -> None:
    """Change a file as the running system would: in the writable layer's upper dir."""
    p = eng.store.upper / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree(root_ns / "tree")
    engine.init(source_dir=root_ns / "tree", description="test base")
    return engine
