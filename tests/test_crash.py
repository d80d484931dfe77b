"""Interrupted actions: a child process runs the action and dies (os._exit, no cleanup,
like a power cut after the last completed syscall) at each step; then a fresh engine must
find the old state or the new one, never anything between, and the system must look the
same when mounted."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from maintenance import bootplan, squash, statesave, store
from maintenance import create as create_mod
from maintenance import reclaim as reclaim_mod
from maintenance import restore as restore_mod
from maintenance import state as statemod
from maintenance.engine import Engine
from maintenance.model import Kind
from maintenance.wording import notice_text
from tests.fstree import apply_changes, build_base, snapshot

CRASH = 99


def _die() -> None:
    os._exit(CRASH)


def crash_in_child(action: Callable[[], object], arm: Callable[[pytest.MonkeyPatch], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: arm the crash point, run, never return into pytest
        try:
            mp = pytest.MonkeyPatch()
            arm(mp)
            action()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def after_nth(mp: pytest.MonkeyPatch, owner: object, name: str, n: int, before: bool) -> None:
    """Die on the n-th call of owner.name: before it runs, or just after it returns."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*a, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == n and before:
            _die()
        r = real(*a, **kw)
        if calls["n"] == n:
            _die()
        return r

    mp.setattr(owner, name, wrapper)


def half_written_squash(mp: pytest.MonkeyPatch) -> None:
    def partial(src, dest, **kw):  # type: ignore[no-untyped-def]
        dest.write_bytes(b"hsqs" + os.urandom(1000))
        _die()

    mp.setattr(squash, "mksquashfs", partial)


CREATE_POINTS = {
    "mid-squash": half_written_squash,
    "squashed, unchecked": lambda mp: after_nth(mp, squash, "check_image", 1, before=True),
    "metadata written": lambda mp: after_nth(mp, store.Store, "write_meta", 1, before=False),
    "image renamed in": lambda mp: after_nth(mp, create_mod, "durable_rename", 1, before=False),
    # atomic writes: the metadata, the trial of the new stack, roottab.prev, roottab
    "trial written": lambda mp: after_nth(mp, store, "atomic_write", 2, before=False),
    "roottab.prev written": lambda mp: after_nth(mp, store, "atomic_write", 3, before=False),
    "roottab written": lambda mp: after_nth(mp, store.Store, "write_roottab", 1, before=False),
    # the layer is cleared without needing free space: set aside, made anew (its files
    # are deleted later, by reclaim: RECLAIM_POINTS)
    "old layer set aside": lambda mp: after_nth(mp, create_mod, "durable_rename", 2,
                                                before=False),
    "fresh layer made": lambda mp: after_nth(mp, store.Store, "make_layer", 1, before=False),
}

RECLAIM_POINTS = {
    "moved into .reclaim": lambda mp: after_nth(mp, os, "rename", 1, before=False),
    "half deleted": lambda mp: after_nth(mp, os, "unlink", 3, before=False),
    "deleted, not synced": lambda mp: after_nth(mp, reclaim_mod, "remove_tree", 1,
                                                before=False),
}


@pytest.fixture
def changed_store(engine: Engine, root_ns: Path) -> tuple[Engine, dict]:  # type: ignore[type-arg]
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    mnt = root_ns / "mnt"
    mnt.mkdir()
    engine.mount(mnt)
    try:
        apply_changes(mnt)
        view = snapshot(mnt)
    finally:
        engine.umount(mnt)
    return engine, view


def view_of(eng: Engine, root: Path) -> dict:  # type: ignore[type-arg]
    mnt = root / "mnt"
    eng.mount(mnt)
    try:
        return snapshot(mnt)
    finally:
        eng.umount(mnt)


@pytest.mark.parametrize("kind", [Kind.INCREMENTAL, Kind.FULL])
@pytest.mark.parametrize("point", list(CREATE_POINTS))
def test_interrupted_create(changed_store, root_ns: Path, point: str, kind: Kind) -> None:  # type: ignore[no-untyped-def]
    eng, before = changed_store
    code = crash_in_child(lambda: eng.create(kind, name="rp"), CREATE_POINTS[point])
    assert code == CRASH, f"the crash point {point!r} was never reached (exit {code})"
    fresh = Engine(eng.data_dir, eng.run_dir)
    fresh.recover()
    tab = fresh.roottab()
    # whatever the crash left, the boot plan the initramfs reads matches roottab again
    assert bootplan.is_current(fresh.store)
    new = ["base", "rp"] if kind is Kind.INCREMENTAL else ["rp"]
    if tab == ["base"]:  # the old state: layer intact, no trace of the new image
        assert fresh.changes(), "old state must keep the writable layer's changes"
        assert not fresh.store.has_image("rp") and not fresh.store.meta_path("rp").exists()
    else:  # the new state: image in the stack, layer empty
        assert tab == new and fresh.changes() == []
    assert fresh.store.stray_tmp() == [] and not fresh.store.layer_new.exists()
    assert fresh.recover() == []
    assert fresh.verify(all_images=True).ok
    assert view_of(fresh, root_ns) == before
    st = fresh.status()
    assert st.ok and not [n for n in st.notices if "interrupted" in notice_text(n)]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


RESTORE_POINTS = {
    "fresh layer made": lambda mp: after_nth(mp, store.Store, "make_layer", 1, before=False),
    "config rendered": lambda mp: after_nth(mp, statemod, "apply", 1, before=False),
    "old layer set aside": lambda mp: after_nth(mp, restore_mod, "durable_rename", 1,
                                                before=False),
}


@pytest.mark.parametrize("point", list(RESTORE_POINTS))
def test_interrupted_restore(changed_store, root_ns: Path, point: str) -> None:  # type: ignore[no-untyped-def]
    eng, before = changed_store
    captured = [c.id for c in eng.state_captures()]
    assert crash_in_child(eng.restore, RESTORE_POINTS[point]) == CRASH
    fresh = Engine(eng.data_dir, eng.run_dir)
    fresh.recover()
    view = view_of(fresh, root_ns)
    if fresh.changes() and len(fresh.changes()) > 1:
        assert view == before  # old state
    else:  # new state: the captured hostname, not the damaged layer's
        assert view["etc/hostname"]["sha"] == sha("base-host\n")
        assert "etc/new.conf" not in view
    assert not fresh.store.layer_new.exists()
    # the captures are never touched by Restore: the next one renders the same values
    assert [c.id for c in fresh.state_captures()] == captured
    fresh.restore()
    assert view_of(fresh, root_ns)["etc/hostname"]["sha"] == sha("base-host\n")


ROLLBACK_POINTS = {
    "fresh layer made": lambda mp: after_nth(mp, store.Store, "make_layer", 1, before=False),
    "fresh layer marked": lambda mp: after_nth(mp, store.Store, "mark_layer_ready", 1,
                                               before=False),
    "roottab written": lambda mp: after_nth(mp, store.Store, "write_roottab", 1, before=False),
    "old layer set aside": lambda mp: after_nth(mp, restore_mod, "durable_rename", 1,
                                                before=False),
}


@pytest.mark.parametrize("point", list(ROLLBACK_POINTS))
def test_interrupted_rollback(changed_store, root_ns: Path, point: str) -> None:  # type: ignore[no-untyped-def]
    eng, _ = changed_store
    mnt = root_ns / "mnt"
    eng.create(Kind.INCREMENTAL, name="inc")
    eng.mount(mnt)
    try:
        (mnt / "etc/after-inc").write_text("layer change\n")
        with_layer = snapshot(mnt)
    finally:
        eng.umount(mnt)
    assert crash_in_child(lambda: eng.rollback("base"), ROLLBACK_POINTS[point]) == CRASH
    fresh = Engine(eng.data_dir, eng.run_dir)
    fresh.recover()
    view = view_of(fresh, root_ns)
    if fresh.roottab() == ["base", "inc"]:  # old state, all of it
        assert view == with_layer
    else:  # new state: the base, a fresh layer with the captured hostname
        assert fresh.roottab() == ["base"]
        assert "etc/after-inc" not in view and "etc/new.conf" not in view
        assert view["etc/hostname"]["sha"] == sha(fresh.state_values()[0].value + "\n")
    assert not fresh.store.layer_new.exists() and fresh.recover() == []


def test_recovery_never_clears_a_layer_written_after_the_crash(changed_store,  # type: ignore[no-untyped-def]
                                                               root_ns: Path) -> None:
    eng, before = changed_store
    arm = CREATE_POINTS["roottab written"]
    assert crash_in_child(lambda: eng.create(Kind.INCREMENTAL, name="rp"), arm) == CRASH
    # a boot that did not run recovery (say, an old initramfs) writes to the layer
    (eng.store.upper / "etc/written-after-crash").write_text("keep me\n")
    fresh = Engine(eng.data_dir, eng.run_dir)
    done = fresh.recover()
    # the crash came between roottab's commit and the boot plan's: recovery renews the plan
    assert done == ["keep the writable layer: it changed after rp was made from it",
                    "renew the boot plan"]
    assert fresh.recover() == []
    view = view_of(fresh, root_ns)
    assert view["etc/written-after-crash"]["size"] == 8
    view.pop("etc/written-after-crash")
    assert view == before


CAPTURE_POINTS = {
    "capture written, not renamed": lambda mp: after_nth(mp, statesave, "durable_rename", 1,
                                                         before=True),
    "capture renamed in": lambda mp: after_nth(mp, statesave, "durable_rename", 1,
                                               before=False),
}


@pytest.mark.parametrize("point", list(CAPTURE_POINTS))
def test_interrupted_capture(changed_store, root_ns: Path, point: str) -> None:  # type: ignore[no-untyped-def]
    """A power cut while a capture is written leaves the captures before it, or those and
    the new one; never a half-written capture that Restore would read."""
    eng, _ = changed_store
    old = [c.id for c in eng.state_captures()]
    assert crash_in_child(lambda: eng.state_save(), CAPTURE_POINTS[point]) == CRASH
    fresh = Engine(eng.data_dir, eng.run_dir)
    assert any(p.name.startswith(".tmp-") for p in fresh.store.state.iterdir()) == (
        point == "capture written, not renamed")
    fresh.recover()
    assert not [p for p in fresh.store.state.iterdir() if p.name.startswith(".tmp-")]
    now = [c.id for c in fresh.state_captures()]
    assert now == old or (now[1:] == old and now[0].endswith("-save"))
    if now != old:  # the new capture holds the changed layer's hostname, whole
        assert fresh.state_values()[0].value == "changed-host"


@pytest.mark.parametrize("point", list(RECLAIM_POINTS))
def test_interrupted_reclaim(changed_store, root_ns: Path, point: str) -> None:  # type: ignore[no-untyped-def]
    """The cleared layer's deletion, cut short anywhere, loses nothing and is finished by
    the next reclaim."""
    eng, before = changed_store
    eng.create(Kind.INCREMENTAL, name="rp")
    assert [p.name.endswith("-squashed") for p in eng.store.trash_entries()] == [True]
    code = crash_in_child(eng.reclaim, RECLAIM_POINTS[point])
    assert code == CRASH, f"the crash point {point!r} was never reached (exit {code})"
    fresh = Engine(eng.data_dir, eng.run_dir)
    assert fresh.recover() == []
    assert fresh.roottab() == ["base", "rp"] and fresh.changes() == []
    assert view_of(fresh, root_ns) == before
    assert fresh.verify(all_images=True).ok
    fresh.reclaim()
    assert fresh.store.trash_entries() == []
    assert list((fresh.store.root / ".reclaim").iterdir()) == []
    assert view_of(fresh, root_ns) == before
