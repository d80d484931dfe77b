"""The kit of the retention tests (for tests/test_retention.py and tests/test_retention_cli.py;
not collected itself): the ages of the restore points, the ``chain`` fixture (a test module
binds it to a name of its own, where pytest finds it), and the store's images, a plan's
reasons and the plan that keeps nothing by count or age (images, reasons, strict)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from maintenance import retention
from maintenance.engine import Engine
from maintenance.model import Kind
from maintenance.records import utcnow
from maintenance.store import Store

AGES = {"base": 100, "inc1": 90, "inc2": 80, "f1": 70, "inc3": 60}  # days


def set_age(eng: Engine, name: str, days: float) -> None:
    meta = eng.store.read_meta(name)
    eng.store.write_meta(dataclasses.replace(
        meta, created=utcnow() - dt.timedelta(days=days)))


def restore_point(eng: Engine, name: str, kind: Kind = Kind.INCREMENTAL) -> None:
    (eng.store.upper / f"{name}.txt").write_text(f"made for {name}\n")
    eng.create(kind, name=name)


@pytest.fixture
def chain(engine: Engine, root_ns: Path) -> Engine:
    """base <- inc1 <- inc2, then a full f1 <- inc3: roottab [f1 inc3], roottab.prev [f1];
    base, inc1 and inc2 are the old restore points (100, 90 and 80 days old)."""
    tree = root_ns / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "home").mkdir()
    (tree / "etc/hostname").write_text("retention\n")
    engine.init(source_dir=tree)
    # no boot trial armed by the creates (tests of trials write their own)
    engine.store.policy_path.write_text("boot_tries: 0\n")
    for name in ("inc1", "inc2"):
        restore_point(engine, name)
    restore_point(engine, "f1", Kind.FULL)
    restore_point(engine, "inc3")
    engine.store.clear_trial()
    for name, days in AGES.items():
        set_age(engine, name, days)
    assert engine.roottab() == ["f1", "inc3"]
    assert engine.store.read_roottab(prev=True) == ["f1"]
    return engine


def images(st: Store) -> list[str]:
    """The images in the store (policy is no image's metadata)."""
    return [n for n in st.image_names() if st.has_image(n)]


def reasons(p: retention.PrunePlan) -> dict[str, str]:
    return {i.name: i.reason for i in p.keep}


def strict(eng: Engine) -> retention.PrunePlan:
    """The plan when the policy keeps nothing by count or age."""
    return retention.plan(eng, keep_last=0, keep_days=0)
