"""The engine on real mounts: loop-mounted squashfs, kernel overlayfs, tmpfs, binds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maintenance.engine import Engine
from maintenance.errors import InUse, NoSpace, NotFound, UsageError
from maintenance.model import Kind
from maintenance.wording import notice_text
from tests.fstree import apply_changes, build_base, snapshot


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree, description="test base")
    return engine


def mounted_view(eng: Engine, where: Path, edit=None) -> dict:  # type: ignore[no-untyped-def]
    where.mkdir(exist_ok=True)
    eng.mount(where)
    try:
        if edit:
            edit(where)
        return snapshot(where)
    finally:
        eng.umount(where)


def test_base_view_matches_source_tree(store: Engine, root_ns: Path) -> None:
    view = mounted_view(store, root_ns / "mnt")
    src = snapshot(root_ns / "tree")
    src.pop("home")
    view.pop("home")  # the bind of the store's home/ stands there
    assert view == src


@pytest.mark.parametrize("kind", [Kind.INCREMENTAL, Kind.FULL])
def test_create_keeps_every_change_across_remount(store: Engine, root_ns: Path,
                                                  kind: Kind) -> None:
    before = mounted_view(store, root_ns / "mnt", apply_changes)
    assert store.changes(), "the change set must land in the writable layer"
    meta = store.create(kind, description="after changes")
    assert store.changes() == []
    assert store.status().layer.files == 0  # type: ignore[union-attr]
    after = mounted_view(store, root_ns / "mnt")
    assert after == before
    tab = store.roottab()
    assert tab == (["base", meta.name] if kind is Kind.INCREMENTAL else [meta.name])
    assert (store.store.root / "roottab.prev").read_text().count("base") == 1
    # spot-check the hard cases by name, not just by equality
    assert "opt/old" not in after and after["opt/renamed/deep/file"]["size"] == 9
    assert "srv/data/sub/file" not in after and "srv/data/sub/only-new" in after
    assert "etc/app/extra.conf" not in after
    assert after["srv/data/owned"]["xattrs"] == {"user.tag": b"changed"}
    assert after["var/lib/newfile-link"]["link_group"] == "var/lib/newfile"
    assert after["dev/zero"]["rdev"] == (1, 5)
    assert after["usr/bin/tool"]["mode"] & 0o777 == 0o700
    assert (after["usr/lib/mod/b.so"]["uid"], after["usr/lib/mod/b.so"]["gid"]) == (42, 43)
    assert store.verify(all_images=True).ok


def test_incremental_whiteouts_stay_deleted_under_a_second_incremental(
        store: Engine, root_ns: Path) -> None:
    mounted_view(store, root_ns / "mnt", apply_changes)
    store.create(Kind.INCREMENTAL, name="one")
    view2 = mounted_view(store, root_ns / "mnt",
                         lambda r: (r / "etc/second").write_text("2\n"))
    store.create(Kind.INCREMENTAL, name="two")
    assert store.roottab() == ["base", "one", "two"]
    assert mounted_view(store, root_ns / "mnt") == view2
    st = store.status()
    assert [e.name for e in st.stack] == ["base", "one", "two"]
    assert all(e.chain_ok for e in st.stack) and st.ok


def test_restore_discards_layer_keeps_home_and_renders_the_captured_config(
        store: Engine, root_ns: Path) -> None:
    base = mounted_view(store, root_ns / "mnt")

    def damage(r: Path) -> None:
        apply_changes(r)
        (r / "home/user-file").write_text("mine\n")

    mounted_view(store, root_ns / "mnt", damage)
    stats = store.restore_plan()
    assert stats.changed > 5 and stats.deleted >= 2
    plan = store.state_plan()
    row = next(i for i in plan.items if i.path == "/etc/hostname")
    assert (row.now, row.written, row.can_keep) == ("changed-host", "base-host", True)
    assert plan.capture is not None and plan.capture.endswith("-install")
    res = store.restore()
    assert res.written == () and res.kept_current == ()  # the captured value is the image's
    assert res.discarded.changed == stats.changed
    assert Path(res.trash).is_dir()
    after = mounted_view(store, root_ns / "mnt")
    assert after == base  # the captured hostname equals the image's: nothing in the layer
    assert not (store.store.upper / "etc/hostname").exists()
    mnt = root_ns / "mnt"
    store.mount(mnt)
    try:
        assert (mnt / "etc/hostname").read_text() == "base-host\n"
        assert (mnt / "home/user-file").read_text() == "mine\n"
    finally:
        store.umount(mnt)
    assert store.purge() > 0 and not Path(res.trash).exists()


def test_review_shows_older_point_on_tmpfs_and_changes_nothing(store: Engine,
                                                               root_ns: Path) -> None:
    mounted_view(store, root_ns / "mnt", apply_changes)
    store.create(Kind.INCREMENTAL, name="inc")
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/pending").write_text("x"))
    (store.store.home / "notes").write_text("home survives\n")
    layer_before = store.changes()
    tab_before = store.roottab()
    rv = root_ns / "review"
    rv.mkdir()
    res = store.review("base", rv)
    try:
        assert res.stack == ("base",) and res.review
        assert (rv / "etc/hostname").read_text() == "base-host\n"
        assert not (rv / "etc/new.conf").exists() and not (rv / "etc/pending").exists()
        assert (rv / "home/notes").read_text() == "home survives\n"
        (rv / "etc/written-in-review").write_text("gone later\n")
        assert any(t.used > 0 for t in store.status().ram.tmpfs)
    finally:
        store.umount(rv)
    assert store.changes() == layer_before and store.roottab() == tab_before
    res = store.review("base", rv)
    try:
        assert not (rv / "etc/written-in-review").exists()
    finally:
        store.umount(rv)


def test_rollback_and_roll_forward(store: Engine, root_ns: Path) -> None:
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/one").write_text("1"))
    store.create(Kind.INCREMENTAL, name="one")
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/two").write_text("2"))
    store.create(Kind.INCREMENTAL, name="two")
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/junk").write_text("j"))
    assert store.rollback("one") == ("base", "one")
    view = mounted_view(store, root_ns / "mnt")
    assert "etc/one" in view and "etc/two" not in view and "etc/junk" not in view
    assert [e.name for e in store.status().other_images] == ["two"]
    assert store.rollback("two") == ("base", "one", "two")
    assert "etc/two" in mounted_view(store, root_ns / "mnt")


def test_delete_refuses_what_is_needed(store: Engine, root_ns: Path) -> None:
    store.trial_tries = 0  # no boot completes here: a trial would keep base (test_updates)
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/one").write_text("1"))
    store.create(Kind.INCREMENTAL, name="one")
    with pytest.raises(InUse, match="active stack"):
        store.delete("one")
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/x").write_text("x"))
    store.create(Kind.FULL, name="full1")
    with pytest.raises(InUse, match=r"roottab\.prev"):
        store.delete("one")
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/y").write_text("y"))
    store.create(Kind.INCREMENTAL, name="on-full")  # roottab.prev is now [full1]
    with pytest.raises(InUse, match="needed by one"):
        store.delete("base")
    with pytest.raises(NotFound):
        store.delete("nope")
    store.delete("one")
    store.delete("base")
    assert store.store.image_names() == ["full1", "on-full"]
    assert store.verify(all_images=True).ok


def test_verify_detects_a_corrupted_image(store: Engine) -> None:
    assert store.verify().ok
    img = store.store.image_path("base")
    with open(img, "r+b") as f:
        f.seek(img.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    rep = store.verify()
    assert not rep.ok and "checksum mismatch" in (rep.items[0].problem or "")


def test_mount_falls_back_to_roottab_prev(store: Engine, root_ns: Path) -> None:
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/one").write_text("1"))
    store.create(Kind.INCREMENTAL, name="one")
    store.store.roottab_path.write_text("base\nmissing-image\n")
    mnt = root_ns / "mnt"
    with pytest.raises(NotFound, match="missing-image"):
        store.mount(mnt)
    res = store.mount(mnt, fallback=True)
    try:
        assert res.roottab == "roottab.prev" and res.stack == ("base",)
    finally:
        store.umount(mnt)
    assert not store.status().ok


def test_create_refuses_when_space_is_short(engine: Engine, root_ns: Path) -> None:
    from maintenance.run import run

    data = engine.data_dir
    run(["mount", "-t", "tmpfs", "-o", "size=40m", "tiny", str(data)])
    try:
        tree = root_ns / "tree"
        build_base(tree)
        (tree / "var/lib/sparse").unlink()
        engine.init(source_dir=tree)
        (engine.store.upper / "big").write_bytes(os.urandom(25 << 20))
        with pytest.raises(NoSpace, match=r"needs up to .* free"):
            engine.create(Kind.INCREMENTAL)
        assert engine.roottab() == ["base"] and engine.store.stray_tmp() == []
        assert (engine.store.upper / "big").exists()
    finally:
        run(["umount", str(data)])


def test_bad_input_is_refused(store: Engine) -> None:
    with pytest.raises(UsageError):
        store.create(Kind.INCREMENTAL, name="../evil")
    with pytest.raises(UsageError, match="empty"):
        store.create(Kind.INCREMENTAL)
    with pytest.raises(UsageError):
        store.create(Kind.FULL, compressor="rar")


def test_writable_layer_is_self_contained(store: Engine, root_ns: Path) -> None:
    """No redirect or metacopy xattrs in the upper: every file there carries its own data,
    so a squashed layer reads the same whatever overlay options or base it later meets."""
    view = mounted_view(store, root_ns / "mnt", apply_changes)
    upper = store.store.upper
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            names = os.listxattr(p, follow_symlinks=False)
            assert not [n for n in names if n.endswith(("overlay.redirect", "overlay.metacopy"))], p
            rel = os.path.relpath(p, upper)
            if os.path.isfile(p) and not os.path.islink(p) and rel in view:
                assert os.path.getsize(p) == view[rel]["size"], rel


def test_init_from_an_existing_image_and_refuse_junk(engine: Engine, root_ns: Path) -> None:
    from maintenance.errors import CommandError, StoreError

    tree = root_ns / "tree"
    build_base(tree)
    other = Engine(root_ns / "other", root_ns / "run")
    other.data_dir.mkdir()
    other.init(source_dir=tree)
    junk = root_ns / "junk.sqfs"
    junk.write_bytes(b"not a squashfs image" * 100)
    with pytest.raises(CommandError, match="unsquashfs"):
        engine.init(image=junk)
    assert engine.store.stray_tmp() == []
    meta = engine.init(image=other.store.image_path("base"), name="copied")
    assert meta.sha256 == other.store.read_meta("base").sha256
    assert engine.roottab() == ["copied"]
    with pytest.raises(StoreError, match="already holds"):
        engine.init(image=other.store.image_path("base"))
    src = snapshot(tree)
    view = mounted_view(engine, root_ns / "mnt")
    src.pop("home")
    view.pop("home")
    assert view == src


def test_status_of_a_broken_store_names_the_problems(store: Engine, root_ns: Path) -> None:
    mounted_view(store, root_ns / "mnt", lambda r: (r / "etc/one").write_text("1"))
    store.create(Kind.INCREMENTAL, name="one")
    (store.store.root / "base.sqfs").rename(root_ns / "away.sqfs")
    st = store.status()
    assert not st.ok
    msgs = " | ".join(notice_text(n) for n in st.notices)
    assert "base: image file is missing" in msgs and "parent image 'base' is missing" in msgs
    assert [e.chain_ok for e in st.stack] == [True, False]
    store.store.roottab_path.write_text("# nothing\n")
    st = store.status()
    assert not st.ok and st.stack == () and "roottab names no image" in notice_text(st.notices[0])
    assert "roottab.prev names: base" in " ".join(notice_text(n) for n in st.notices)


def test_low_space_is_warned(engine: Engine, root_ns: Path) -> None:
    from maintenance.run import run

    run(["mount", "-t", "tmpfs", "-o", "size=30m", "tiny", str(engine.data_dir)])
    try:
        tree = root_ns / "tree"
        build_base(tree)
        (tree / "var/lib/sparse").unlink()
        engine.init(source_dir=tree)
        assert any("low space" in notice_text(n) for n in engine.status().notices)
        assert engine.status().ram.tmpfs[0].mountpoint == str(engine.data_dir)
    finally:
        run(["umount", str(engine.data_dir)])


def test_layer_in_use_by_a_live_overlay_is_not_squashed(store: Engine, root_ns: Path) -> None:
    mnt = root_ns / "mnt"
    mnt.mkdir()
    store.mount(mnt)
    try:
        (mnt / "etc/live").write_text("x")
        with pytest.raises(InUse, match="in use by the overlay"):
            store.create(Kind.INCREMENTAL)
        with pytest.raises(InUse):
            store.restore()
    finally:
        store.umount(mnt)
    assert store.changes()


def test_actions_queued_for_the_next_boot(store: Engine, root_ns: Path) -> None:
    mnt = root_ns / "mnt"
    mnt.mkdir()
    store.mount(mnt)  # the running system: its layer is in use
    try:
        (mnt / "etc/live").write_text("x")
        store.queue("incremental", name="at-boot", description="queued")
        assert store.pending() == {"action": "incremental", "queued": store.pending()["queued"],  # type: ignore[index]
                                   "name": "at-boot", "description": "queued"}
        assert any("queued for the next boot" in notice_text(n) for n in store.status().notices)
    finally:
        store.umount(mnt)
    assert store.run_pending() == "created incremental restore point at-boot"
    assert store.pending() is None and store.roottab() == ["base", "at-boot"]
    assert store.changes() == []
    store.queue("restore")
    assert store.run_pending() is not None and store.run_pending() is None
    store.queue("incremental")
    assert store.run_pending() == ("nothing done: the writable layer is empty: nothing to put "
                                   "in an incremental restore point")
    with pytest.raises(UsageError):
        store.queue("format-disk")


def test_a_deep_stack_with_long_paths_mounts(engine: Engine, root_ns: Path) -> None:
    """fsconfig(2) (util-linux >= 2.39) caps each option at 256 bytes: twelve images with
    64-character names under a long path must still mount, and the full view too."""
    tree = root_ns / "tree"
    build_base(tree)
    deep = root_ns / ("long-directory-name-" * 4) / "data"
    deep.mkdir(parents=True)
    eng = Engine(deep, root_ns / ("run-dir-with-a-long-name-" * 3))
    eng.init(source_dir=tree, name="b" * 64)
    for i in range(11):
        mounted_view(eng, root_ns / "mnt", lambda r, i=i: (r / f"etc/f{i}").write_text(str(i)))
        eng.create(Kind.INCREMENTAL, name=f"{i:02d}" + "x" * 62)
    mounted_view(eng, root_ns / "mnt", lambda r: (r / "etc/last").write_text("z"))
    view = mounted_view(eng, root_ns / "mnt")
    assert all(f"etc/f{i}" in view for i in range(11)) and "etc/last" in view
    eng.create(Kind.FULL, name="flat")
    assert mounted_view(eng, root_ns / "mnt") == view
