"""Hostile and unlucky stores (issue 10): each case once lost data or wedged ibi; each is
reproduced on a real store, with real mounts, and must now give one clear line and lose
nothing. Cases needing no mounts run as an ordinary user too.

Here: /home, one writer, a bad byte or a wrong type, links out of the store; a full disk,
the child that dies with ibi and the RAM overlays are in tests/test_hostile_space.py, the
shared kit in tests/hostile_kit.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from maintenance import mounts
from maintenance.engine import Engine
from maintenance.errors import InUse, MountError, StoreError
from maintenance.model import Kind
from maintenance.wording import notice_text
from tests import hostile_kit
from tests.fstree import build_base
from tests.hostile_kit import ROOT, ibi, one_line_error, write_in

# the fixture, by name: pytest finds it in this module
store = hostile_kit.store


# --- /home is never silently part of the layer ------------------------------------------

def test_a_base_without_home_gets_one_and_home_writes_reach_the_store(
        engine: Engine, root_ns: Path) -> None:
    tree = root_ns / "tree"
    build_base(tree)
    shutil.rmtree(tree / "home")
    engine.init(source_dir=tree)
    write_in(engine, root_ns / "mnt", {"home/u/file": "kept\n", "etc/x": "layer\n"})
    assert (engine.store.home / "u/file").read_text() == "kept\n"
    assert not (engine.store.upper / "home/u").exists()
    meta = engine.create(Kind.INCREMENTAL)
    assert (engine.store.home / "u/file").read_text() == "kept\n"
    assert meta.name in engine.roottab()


def test_home_files_left_in_the_layer_are_moved_to_home_not_dropped(store: Engine) -> None:
    up = store.store.upper
    (up / "home/bob").mkdir(parents=True)
    (up / "home/bob/thesis.txt").write_text("years of work\n")
    (up / "etc").mkdir()
    (up / "etc/motd").write_text("hi\n")
    warn = [notice_text(n) for n in store.status().notices if "under /home" in notice_text(n)]
    assert len(warn) == 1 and "holds 1 entries under /home" in warn[0]
    store.create(Kind.INCREMENTAL, name="rp")
    rescued = list(store.store.home.glob("ibi-rescued-*/bob/thesis.txt"))
    assert len(rescued) == 1 and rescued[0].read_text() == "years of work\n"
    assert not [n for n in store.status().notices if "under /home" in notice_text(n)]


def test_an_absolute_home_symlink_is_followed_inside_the_root(engine: Engine,
                                                              root_ns: Path) -> None:
    tree = root_ns / "tree"
    build_base(tree)
    shutil.rmtree(tree / "home")
    (tree / "var/home").mkdir(parents=True)
    os.symlink("/var/home", tree / "home")
    host = root_ns / "host-dir"  # what a host-level resolution would have bound over
    host.mkdir()
    (host / "precious").write_text("host\n")
    engine.init(source_dir=tree)
    mnt = root_ns / "mnt"
    mnt.mkdir()
    engine.mount(mnt)
    try:
        assert mounts.is_mountpoint(mnt / "var/home")
        (mnt / "var/home/note").write_text("via the link\n")  # (/home's link is absolute)
    finally:
        engine.umount(mnt)
    assert (engine.store.home / "note").read_text() == "via the link\n"
    assert (host / "precious").read_text() == "host\n"


# --- one writer ----------------------------------------------------------------------------

def test_a_layer_mounted_in_another_mount_namespace_is_seen_and_refused(
        store: Engine, root_ns: Path) -> None:
    mnt = root_ns / "elsewhere"
    mnt.mkdir()
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
            "from maintenance.engine import Engine\n"
            f"Engine({str(store.data_dir)!r}, {str(root_ns / 'run2')!r}).mount({str(mnt)!r})\n"
            "print('mounted', flush=True); time.sleep(120)\n")
    child = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                              sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "mounted"
        assert not mounts.is_mountpoint(mnt)  # not in our namespace: only the kernel knows
        here = root_ns / "here"
        here.mkdir()
        for action in (lambda: store.mount(here), lambda: store.create(Kind.INCREMENTAL),
                       store.restore):
            with pytest.raises(InUse, match=r"busy: .*mount namespace of process"):
                action()
        assert not mounts.is_mountpoint(here)
    finally:
        child.kill()
        child.wait()
    store.mount(here)  # the namespace is gone with its last process: the layer is free
    store.umount(here)


def test_actions_and_mounts_wait_for_the_lock_and_a_dead_holder_leaves_none(
        store: Engine, root_ns: Path) -> None:
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
            "from maintenance.store import Store\n"
            f"with Store({str(store.data_dir)!r}).locked():\n"
            "    print('locked', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    mnt = root_ns / "mnt"
    mnt.mkdir()
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        store.lock_wait = 0.5
        for action in (lambda: store.mount(mnt), store.restore, store.purge):
            with pytest.raises(InUse, match=rf"busy: .* \(process {holder.pid}, since "):
                action()
        assert not mounts.is_mountpoint(mnt)
        assert store.status().stack  # reading needs no lock
    finally:
        holder.kill()  # a crash: the kernel drops its flock; its line stays in the file
        holder.wait()
    assert str(holder.pid) in (store.store.root / ".lock").read_text()
    store.mount(mnt)  # at once: nothing to clear by hand
    store.umount(mnt)


def test_mount_points_with_spaces_are_read_from_mountinfo(store: Engine,
                                                           root_ns: Path) -> None:
    mnt = root_ns / "with space\tand tab"
    mnt.mkdir()
    store.mount(mnt)
    try:
        assert store._live_overlay() == str(mnt)
        with pytest.raises(InUse, match="with space"):
            store.restore()
    finally:
        store.umount(mnt)


def test_umount_leaves_mounts_ibi_did_not_make(store: Engine, root_ns: Path) -> None:
    other = root_ns / "other"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(other)], check=True)
    try:
        with pytest.raises(MountError, match="not mounted by ibi"):
            store.umount(other)
        assert mounts.is_mountpoint(other)
    finally:
        subprocess.run(["umount", str(other)], check=True)


# --- one bad byte, one wrong type --------------------------------------------------------

def test_a_non_utf8_image_yaml_wedges_nothing(store: Engine, root_ns: Path) -> None:
    st = store.store
    (st.upper / "etc").mkdir()
    (st.upper / "etc/motd").write_text("x\n")
    store.create(Kind.INCREMENTAL, name="inc1")
    store.rollback("base")
    (st.root / "inc1.yaml").write_bytes(b"name: inc1\n\xff\xfe garbage\n")
    s = store.status()
    assert any("inc1.yaml is not UTF-8 text" in notice_text(n) for n in s.notices)
    store.recover()  # the boot plan leaves the unreadable image out
    assert store.recover() == []
    write_in(store, root_ns / "mnt", {"etc/y": "y\n"})
    store.create(Kind.INCREMENTAL, name="inc2")
    store.restore()
    store.rollback("inc2")
    store.delete("inc1")  # the bad image itself can go
    assert not st.image_path("inc1").exists() and not st.meta_path("inc1").exists()
    p = ibi("status", "--data", str(store.data_dir))
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("doc, why", [
    ("stack: [1, 2]", "'stack' is not a list of image names"),
    ("format: 99", "format 99 is newer than this ibi understands (1)"),
    ("size: big", "'size' is not a size"),
    ("parent: [a]", "'parent' is not a string"),
    ("kernels: {a: 1}", "'kernels' is not a list"),
])
def test_ill_typed_metadata_is_named_in_one_line(store: Engine, doc: str, why: str) -> None:
    st = store.store
    text = st.meta_path("base").read_text()
    key = doc.split(":")[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + ":")]
    st.meta_path("base").write_text("\n".join([*lines, doc]) + "\n")
    with pytest.raises(StoreError) as e:
        st.read_meta("base")
    assert str(e.value).startswith("base.yaml: unreadable metadata") and why in str(e.value)
    assert "\n" not in str(e.value)
    p = ibi("status", "--data", str(store.data_dir))
    assert "Traceback" not in p.stderr and why in p.stdout + p.stderr


def test_bad_bytes_in_pending_roottab_and_preserve(store: Engine) -> None:
    st = store.store
    st.pending_path.write_bytes(b"action: restore\nname: \xff\n")
    assert any("pending is not UTF-8" in notice_text(n) for n in store.status().notices)
    assert store.cancel_pending() is True  # the remedy works on the bad file
    st.pending_path.write_text("action: rollback\nname: ../../etc\n")
    with pytest.raises(StoreError, match="pending: bad image name"):
        store.pending()
    store.cancel_pending()
    st.preserve_path.write_bytes(b"/etc/\xff\n")
    store.state_config()  # an unreadable legacy list is not imported, and says so
    st.roottab_path.write_bytes(b"base\n\xff\n")
    s = store.status()
    assert any("roottab is not UTF-8 text" in notice_text(n) for n in s.notices)
    p = ibi("mount", "--data", str(store.data_dir), "/nonexistent")
    assert p.returncode != 0 and "Traceback" not in p.stderr


def test_init_refuses_a_store_that_lost_its_roottab(store: Engine, root_ns: Path) -> None:
    st = store.store
    st.upper.joinpath("etc").mkdir()
    st.upper.joinpath("etc/motd").write_text("x\n")
    store.create(Kind.INCREMENTAL, name="inc1")
    base_sha = store.store.read_meta("base").sha256
    st.roottab_path.unlink()
    with pytest.raises(StoreError, match="without a roottab"):
        store.init(source_dir=root_ns / "tree")
    assert store.store.read_meta("base").sha256 == base_sha


# --- links out of the store --------------------------------------------------------------

def test_purge_does_not_follow_a_trash_symlink(store: Engine, root_ns: Path) -> None:
    victim = root_ns / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine\n")
    store.store.trash.rmdir()
    os.symlink(victim, store.store.trash)
    with pytest.raises(StoreError, match="symbolic link"):
        store.purge()
    assert (victim / "keep").read_text() == "mine\n"
    p = ibi("purge", "--data", str(store.data_dir))
    assert p.returncode == 1 and "symbolic link" in one_line_error(p)
    assert (victim / "keep").exists()


def test_a_symlinked_layer_id_is_not_read(store: Engine, root_ns: Path) -> None:
    secret = root_ns / "secret"
    secret.write_text("0123456789abcdef\n")
    idf = store.store.layer / "id"
    idf.unlink()
    os.symlink(secret, idf)
    assert store.store.layer_id() is None
