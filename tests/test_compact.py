"""Compaction on real stores and real mounts: a run of incremental restore points merged
into one image shows the same system (every hard case of a layer: whiteouts, opaque
directories, a directory made again over a whiteout, odd file names, hard links, xattrs,
device nodes), the store refuses what it cannot merge, a crash at every step leaves the
old stack or the new one, and stacks deeper than one lowerdir= list are assembled."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from maintenance import compact, mounts, squash, store
from maintenance import create as create_mod
from maintenance.cli import main
from maintenance.engine import Engine
from maintenance.errors import IntegrityError, NoSpace, UsageError
from maintenance.model import Kind
from maintenance.wording import notice_text
from tests.fstree import apply_changes, build_base, snapshot
from tests.test_crash import CRASH, after_nth, crash_in_child
from tests.test_updates import count_calls

ODD = ["with space", "quote\"d", "back\\slash", "tab\there", "ünï cödé", "-dash", "star*"]


def through(eng: Engine, root: Path, change: Any) -> None:
    """Change the system as it runs: through the writable overlay of the stack."""
    mnt = root / "sys"
    mnt.mkdir(exist_ok=True)
    eng.mount(mnt)
    try:
        change(mnt)
    finally:
        eng.umount(mnt)


def system(eng: Engine, root: Path) -> dict[str, Any]:
    mnt = root / "look"
    mnt.mkdir(exist_ok=True)
    eng.mount(mnt)
    try:
        return snapshot(mnt)
    finally:
        eng.umount(mnt)


def second(mnt: Path) -> None:
    (mnt / "etc/app/extra.conf").write_text("back again\n")  # over layer 1's whiteout
    (mnt / "etc/new.conf").unlink()  # layer 1 added it: gone, nothing below to hide
    shutil.rmtree(mnt / "srv/data/sub")  # layer 1's opaque directory ...
    (mnt / "srv/data/sub").write_text("now a file\n")  # ... becomes a file
    shutil.rmtree(mnt / "usr/lib/mod")  # a whole directory of the base, hard links too
    (mnt / "etc/hostname").unlink()
    (mnt / "etc/hostname").mkdir()  # a file of the base becomes a directory
    (mnt / "etc/hostname/inside").write_text("x\n")
    for n in ODD[:4]:
        (mnt / "srv/odd" / n).unlink()
    (mnt / "srv/odd" / ODD[4]).write_text("changed\n")


def third(mnt: Path) -> None:
    (mnt / "usr/lib/mod").mkdir()  # made again over layer 2's whiteout: base's files
    (mnt / "usr/lib/mod/c.so").write_text("new module\n")  # must stay hidden
    (mnt / "srv/data/sub").unlink()
    (mnt / "srv/data/sub").mkdir()
    (mnt / "srv/data/sub/third").write_text("3\n")
    for n in ODD[5:]:
        (mnt / "srv/odd" / n).unlink()
    (mnt / "srv/odd" / ODD[0]).write_text("made again\n")


@pytest.fixture
def deep(engine: Engine, root_ns: Path) -> Engine:
    """base and three incremental restore points (every hard case of a layer), and a
    writable layer with a change of its own."""
    tree = root_ns / "tree"
    build_base(tree)
    odd = tree / "srv/odd"
    odd.mkdir()
    for n in ODD:
        (odd / n).write_text(f"{n}\n")
    (tree / "opt/old/deep/more").mkdir()
    (tree / "opt/old/deep/more/x").write_text("x\n")
    engine.init(source_dir=tree)
    engine.trial_tries = 0
    for name, change in (("one", apply_changes), ("two", second), ("three", third)):
        through(engine, root_ns, change)
        engine.create(Kind.INCREMENTAL, name=name)
    (engine.store.upper / "root").mkdir(mode=0o700, exist_ok=True)
    (engine.store.upper / "root/unsaved.txt").write_text("in the layer\n")
    return engine


def test_the_merged_image_shows_the_same_system(deep: Engine, root_ns: Path) -> None:
    eng = deep
    before = system(eng, root_ns)
    upper = snapshot(eng.store.upper)
    meta = eng.compact(name="merged", description="one..three")
    assert eng.roottab() == ["base", "merged"]
    assert meta.kind is Kind.INCREMENTAL and meta.stack == ("base",) and meta.parent == "base"
    assert meta.description == "one..three" and meta.source_layer == compact.COMPACTED
    assert system(eng, root_ns) == before  # the same union, under the same layer
    assert snapshot(eng.store.upper) == upper
    for n in ("one", "two", "three"):  # kept until prune or delete
        assert eng.store.has_image(n)
    assert eng.store.read_roottab(prev=True) == ["base", "one", "two", "three"]
    # what the merge had to spell out: base's entries that the run hid
    look = before
    assert "usr/lib/mod/c.so" in look and "usr/lib/mod/a.so" not in look
    assert "srv/data/sub/third" in look and "srv/data/sub/file" not in look
    assert "etc/hostname/inside" in look and "opt/old" not in look
    assert [n for n in ODD if f"srv/odd/{n}" in look] == [ODD[0], ODD[4]]
    # the image holds whiteouts for exactly those, and still boots as a lower
    with eng._image_tree(eng.store.image_path("merged")) as tree:
        outs = {str(p.relative_to(tree)) for p in tree.rglob("*")
                if stat.S_ISCHR(p.lstat().st_mode) and p.lstat().st_rdev == 0}
    assert outs == {"usr/lib/mod/a.so", "usr/lib/mod/b.so", "usr/lib/mod/a-hardlink.so",
                    "srv/data/sub/file", "opt/old",
                    *(f"srv/odd/{n}" for n in ODD[1:4] + ODD[5:])}, outs


def test_a_run_from_the_middle_and_the_plan(deep: Engine, root_ns: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    eng = deep
    before = system(eng, root_ns)
    d = ["--data", str(eng.data_dir), "--run-dir", str(eng.run_dir)]
    assert main(["compact", "--from", "two", "--dry-run", "--json", *d]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["run"] == ["two", "three"] and plan["below"] == ["base", "one"]
    assert plan["depth_before"] == 4 and plan["depth_after"] == 3
    assert plan["run_bytes"] == sum(eng.store.image_path(n).stat().st_size
                                    for n in ("two", "three"))
    assert eng.roottab() == ["base", "one", "two", "three"]  # a dry run changes nothing
    assert main(["compact", "--from", "two", "--name", "two-three", *d]) == 0
    out = capsys.readouterr().out
    assert "merged two..three (2 restore points) into two-three" in out, out
    assert "the stack is now base -> one -> two-three" in out, out
    assert eng.roottab() == ["base", "one", "two-three"]
    assert system(eng, root_ns) == before
    assert main(["compact", "--json", *d]) == 0  # the rest: one and two-three
    done = json.loads(capsys.readouterr().out)
    assert done["image"]["stack"] == ["base"] and done["run"] == ["one", "two-three"]
    assert eng.roottab() == ["base", done["image"]["name"]]
    assert system(eng, root_ns) == before


@pytest.mark.parametrize(("args", "error"), [
    (["--from", "base"], "base is the bottom of the stack"),
    (["--from", "three"], "nothing to compact: the run from three to the top is one image"),
    (["--to", "two"], "a run ends at the top of the stack (three), not at two"),
    (["--from", "nosuch"], "'nosuch' is not in the active stack (base one two three)"),
    (["--name", "one"], "an image named 'one' already exists"),
    (["--name", "bad/name"], "bad/name"),
])
def test_refusals(deep: Engine, capsys: pytest.CaptureFixture[str], args: list[str],
                  error: str) -> None:
    d = ["--data", str(deep.data_dir), "--run-dir", str(deep.run_dir)]
    code = main(["compact", *args, *d])
    err = capsys.readouterr().err
    assert code in (1, 2) and error in err, err
    assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err, err
    assert deep.roottab() == ["base", "one", "two", "three"]
    assert not deep.store.stray_tmp()


def test_a_full_image_is_not_merged(engine: Engine, root_ns: Path) -> None:
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    engine.trial_tries = 0
    (engine.store.upper / "a").write_text("a\n")
    engine.create(Kind.FULL, name="full")
    (engine.store.upper / "b").write_text("b\n")
    engine.create(Kind.INCREMENTAL, name="inc")
    with pytest.raises(UsageError, match="full is the bottom of the stack"):
        engine.compact(first="full")
    with pytest.raises(UsageError, match="nothing to compact"):
        engine.compact()


def test_a_trial_carries_over(deep: Engine) -> None:
    eng = deep
    eng.trial_tries = None
    (eng.store.upper / "four").write_text("4\n")
    eng.create(Kind.INCREMENTAL, name="four")
    t = eng.trial()
    assert t is not None and t.stack[-1] == "four"
    with open(eng.store.boots_path, "a") as f:
        f.write("boot 1764700000\n")
    eng.compact(name="merged")
    t2 = eng.trial()
    assert t2 is not None and t2.stack == ("base", "merged")
    assert (t2.good, t2.tries, t2.reason) == (t.good, t.tries, t.reason)
    assert eng.store.count_boots() == 1  # the boots go on counting
    assert "\ntrial 3\n" in (eng.store.root / "bootplan").read_text()


def test_a_difference_is_refused_and_nothing_changes(deep: Engine, root_ns: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The check against the run is real: a merge that loses the whiteouts is caught."""
    monkeypatch.setattr(compact, "hidden", lambda run, below, whole: [])
    before = system(deep, root_ns)
    with pytest.raises(IntegrityError, match="differs from the run it replaces"):
        deep.compact(name="merged")
    assert deep.roottab() == ["base", "one", "two", "three"]
    assert not deep.store.has_image("merged") and not deep.store.meta_path("merged").exists()
    assert not deep.store.stray_tmp() and system(deep, root_ns) == before
    assert not mounts.mounts_under(deep.run_dir)


def test_no_space_is_refused_before_any_work(deep: Engine,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(create_mod.psutil, "disk_usage",
                        lambda p: type("U", (), {"free": 1 << 20})())
    with pytest.raises(NoSpace, match="merge 3 restore points"):
        deep.compact()
    assert deep.roottab() == ["base", "one", "two", "three"] and not deep.store.stray_tmp()


STEPS = [(squash, "mksquashfs"), (create_mod, "fsync_file"), (store, "atomic_write"),
         (create_mod, "durable_rename")]


def test_a_crash_at_every_step(deep: Engine, root_ns: Path) -> None:
    """A power cut anywhere leaves the old stack or the merged one: the same system either
    way, the store recovered (no temporary file, no metadata without its image)."""
    eng = deep
    old_tab = eng.roottab()
    view = system(eng, root_ns)

    def state() -> tuple[str, ...]:
        fresh = Engine(eng.data_dir, eng.run_dir)
        fresh.recover()
        assert not fresh.store.stray_tmp() and not mounts.mounts_under(eng.run_dir)
        for n in fresh.store.image_names():
            assert fresh.store.has_image(n), f"metadata of {n} without its image"
        assert system(fresh, root_ns) == view
        return tuple(fresh.roottab())

    def back() -> None:  # the old stack again (also as roottab.prev), the merged image gone
        eng.store.write_roottab(old_tab)
        eng.store.write_roottab(old_tab)
        if eng.store.has_image("merged"):
            eng.delete("merged")

    action = functools.partial(Engine(eng.data_dir, eng.run_dir).compact, name="merged")
    seen = set()
    for owner, name in STEPS:
        n = count_calls(action, owner, name)
        assert state() == ("base", "merged")
        back()
        for i in range(1, n + 1):
            for before in (True, False):
                code = crash_in_child(action, functools.partial(
                    after_nth, owner=owner, name=name, n=i, before=before))
                assert code == CRASH, (name, i, before, code)
                now = state()
                seen.add(now)
                assert now in (tuple(old_tab), ("base", "merged")), (name, i, before, now)
                back()
    assert seen == {tuple(old_tab), ("base", "merged")}


def test_deeper_than_one_lowerdir_list(engine: Engine, root_ns: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """100 restore points: past the 255 bytes of one lowerdir= list the stack is mounted
    one lowerdir+= per image (Linux >= 6.8); compaction brings it back to two."""
    if mounts.max_depth() < 101:
        pytest.skip(f"Linux {os.uname().release} has no lowerdir+= (printed: too old)")
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    # each restore point squashed as create squashes a layer (a create mounts the whole
    # stack for its capture: 100 of them take minutes)
    tab = ["base"]
    for i in range(100):
        layer = root_ns / f"layer{i}"
        layer.mkdir()
        (layer / f"f{i}").write_text(f"{i}\n")
        if i % 10 == 9:  # and some deletions of the one before
            os.mknod(layer / f"f{i - 1}", stat.S_IFCHR, os.makedev(0, 0))
        tmp = engine.store.tmp_path(f"p{i}", ".sqfs")
        squash.mksquashfs(layer, tmp)
        engine._commit_image(tmp, f"p{i}", Kind.INCREMENTAL, "", tuple(tab), tab[-1], "zstd",
                             None)
        tab.append(f"p{i}")
    engine.store.write_roottab(tab)
    mnt = root_ns / "mnt"
    mnt.mkdir()
    engine.mount(mnt)
    try:
        assert (mnt / "f0").read_text() == "0\n" and (mnt / "f99").read_text() == "99\n"
        assert not (mnt / "f98").exists() and (mnt / "f97").exists()
        info = mounts.mount_at(mnt)
        assert info is not None and "lowerdir+=" in info.options, info
    finally:
        engine.umount(mnt)
    before = system(engine, root_ns)
    d = ["--data", str(engine.data_dir), "--run-dir", str(engine.run_dir)]
    assert main(["compact", "--name", "all", *d]) == 0
    assert "merged p0..p99 (100 restore points) into all" in capsys.readouterr().out
    assert engine.roottab() == ["base", "all"]
    assert system(engine, root_ns) == before


def test_create_refuses_a_stack_the_boot_cannot_assemble(deep: Engine,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    monkeypatch.setattr(mounts, "max_depth", lambda release=None: 4)
    (deep.store.upper / "more").write_text("more\n")
    d = ["--data", str(deep.data_dir), "--run-dir", str(deep.run_dir)]
    assert main(["create", "--incremental", "--name", "four", *d]) == 1
    err = capsys.readouterr().err
    assert "would make the stack 5 images deep" in err and "at most 4" in err, err
    assert "ibi compact" in err
    assert deep.roottab() == ["base", "one", "two", "three"] and not deep.store.stray_tmp()
    assert main(["compact", *d]) == 0
    assert main(["create", "--incremental", "--name", "four", *d]) == 0
    assert len(deep.roottab()) == 3


def test_status_asks_for_compaction_past_the_policy_depth(deep: Engine) -> None:
    eng = deep
    assert not [n for n in eng.status().notices if n.code == "depth"]  # 4 <= 16
    (eng.store.root / "policy").write_text("format: 1\nmax_depth: 3\n")
    found = [n for n in eng.status().notices if n.code == "depth"]
    assert len(found) == 1 and notice_text(found[0]).startswith(
        "the stack is 4 images deep (the policy's bound is 3)"), found
    assert "ibi compact" in notice_text(found[0])
    eng.compact()
    assert not [n for n in eng.status().notices if n.code == "depth"]


@pytest.mark.parametrize("points", [0, 2])
def test_a_read_only_mount_of_any_depth(engine: Engine, root_ns: Path, points: int) -> None:
    """ibi mount --read-only: a stack of one image too (overlayfs wants two lowers without
    an upper: one image is bound read-only instead)."""
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    engine.trial_tries = 0
    for i in range(points):
        (engine.store.upper / f"p{i}").write_text(f"{i}\n")
        engine.create(Kind.INCREMENTAL, name=f"p{i}")
    mnt = root_ns / "ro"
    mnt.mkdir()
    r = engine.mount(mnt, readonly=True)
    try:
        assert r.stack == ("base", *(f"p{i}" for i in range(points)))
        assert (mnt / "etc/hostname").read_text() == "base-host\n"
        with pytest.raises(OSError):
            (mnt / "etc/new").write_text("x")
    finally:
        assert engine.umount(mnt) >= 1
    assert not mounts.mounts_under(root_ns / "ro") and not mounts.is_mountpoint(mnt)
