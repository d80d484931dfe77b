"""The kit of the hostile stores' tests (for tests/test_hostile.py and
tests/test_hostile_space.py; not collected itself): ibi's command line in a child process
(ibi, one_line_error), the ``store`` fixture (a test module binds it to a name of its own,
where pytest finds it) and files written through a mounted stack (write_in)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maintenance.engine import Engine
from tests.fstree import build_base

ROOT = Path(__file__).resolve().parents[1]


def ibi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maintenance.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    return p.stderr.splitlines()[0] if p.stderr else ""


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    return engine


def write_in(eng: Engine, where: Path, files: dict[str, str]) -> None:
    where.mkdir(exist_ok=True)
    eng.mount(where)
    try:
        for rel, text in files.items():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            (where / rel).write_text(text)
    finally:
        eng.umount(where)
