"""Random change sets survive create-incremental -> remount (hypothesis)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maintenance.engine import Engine
from maintenance.model import Kind
from tests.conftest import require_root
from tests.fstree import build_base, snapshot

PATHS = ["etc/hostname", "etc/app/main.conf", "etc/app/extra.conf", "etc/app", "usr/bin/tool",
         "usr/lib/mod", "opt/old", "opt/old/top", "srv/data/sub", "var/lib/empty", "new/dir",
         "new/file", "usr/bin/tool-link"]

ops = st.lists(st.tuples(st.sampled_from(["write", "delete", "mkdir", "chmod", "xattr",
                                          "symlink", "rename"]),
                         st.sampled_from(PATHS), st.binary(max_size=64)), max_size=12)


def apply(root: Path, changes: list[tuple[str, str, bytes]]) -> None:
    for op, rel, data in changes:
        p = root / rel
        try:
            if op == "write":
                p.parent.mkdir(parents=True, exist_ok=True)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                p.write_bytes(data)
            elif op == "delete":
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    p.unlink()
            elif op == "mkdir":
                p.mkdir(parents=True, exist_ok=True)
            elif op == "chmod" and os.path.lexists(p) and not p.is_symlink():
                os.chmod(p, stat.S_IMODE(p.stat().st_mode) ^ 0o040)
            elif op == "xattr" and os.path.lexists(p) and not p.is_symlink():
                os.setxattr(p, "user.h", data or b"-")
            elif op == "symlink" and not os.path.lexists(p):
                p.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(data.hex() or "x", p)
            elif op == "rename" and os.path.lexists(p):
                dst = root / "renamed" / rel.replace("/", "_")
                dst.parent.mkdir(exist_ok=True)
                if not os.path.lexists(dst):
                    shutil.move(str(p), str(dst))
        except (FileNotFoundError, NotADirectoryError, FileExistsError, IsADirectoryError):
            pass


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=ops, second=ops)
def test_random_changes_survive_two_incrementals(tmp_path_factory: pytest.TempPathFactory,
                                                 first: list, second: list) -> None:  # type: ignore[type-arg]
    require_root()
    root = tmp_path_factory.mktemp("prop")
    tree = root / "tree"
    build_base(tree)
    (tree / "var/lib/sparse").unlink()
    data = root / "data"
    data.mkdir()
    eng = Engine(data, root / "run")
    eng.init(source_dir=tree)
    mnt = root / "mnt"
    mnt.mkdir()
    views = []
    for i, changes in enumerate((first, second)):
        eng.mount(mnt)
        try:
            apply(mnt, changes)
            views.append(snapshot(mnt))
        finally:
            eng.umount(mnt)
        if eng.changes():
            eng.create(Kind.INCREMENTAL, name=f"inc{i}")
        eng.mount(mnt)
        try:
            assert snapshot(mnt) == views[-1]
        finally:
            eng.umount(mnt)
    shutil.rmtree(root)
