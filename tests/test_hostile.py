"""Hostile and unlucky stores (issue 10): each case once lost data or wedged ibi; each is
reproduced on a real store, with real mounts, and must now give one clear line and lose
nothing. Cases needing no mounts run as an ordinary user too."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maintenance import mounts
from maintenance import status as status_mod
from maintenance.assemble import review_tmpfs_bytes
from maintenance.engine import Engine
from maintenance.errors import (
    IntegrityError,
    InUse,
    MountError,
    NoSpace,
    StoreError,
    UsageError,
)
from maintenance.model import Kind, Level
from maintenance.store import Store
from maintenance.wording import notice_text
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


# --- a full disk after the commit point --------------------------------------------------

@pytest.fixture
def small_fs(root_ns: Path):  # type: ignore[no-untyped-def]
    img = root_ns / "small.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", "256", str(img), "24M"],
                   check=True)
    d = root_ns / "small"
    d.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(d)], check=True)
    yield d
    subprocess.run(["umount", str(d)], check=True)


def small_store(fs: Path, root_ns: Path) -> Engine:
    """A store on the small file system (the base without its 8 MiB sparse file)."""
    data = fs / "data"
    data.mkdir()
    tree = root_ns / "tree"
    build_base(tree)
    (tree / "var/lib/sparse").unlink()
    eng = Engine(data, root_ns / "run")
    eng.init(source_dir=tree)
    return eng


def fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            assert e.errno == errno.ENOSPC
    n = 0
    try:  # the last blocks and inodes, too
        while True:
            (path / f"f{n}").mkdir()
            n += 1
    except OSError:
        pass
    return filler


def test_a_full_disk_after_the_commit_point_blocks_nothing(small_fs: Path, root_ns: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    eng = small_store(small_fs, root_ns)
    (eng.store.upper / "etc").mkdir()
    (eng.store.upper / "etc/big").write_bytes(os.urandom(2 << 20))
    # the disk fills up the moment the image is committed (roottab names it)
    real = eng.store.write_roottab
    filled: list[Path] = []

    def commit_then_fill(names):  # type: ignore[no-untyped-def]
        real(names)
        filled.append(fill(small_fs))

    monkeypatch.setattr(eng.store, "write_roottab", commit_then_fill)
    meta = eng.create(Kind.INCREMENTAL, name="rp")  # done: the layer cleared without space
    monkeypatch.undo()
    assert eng.roottab() == ["base", "rp"] and eng.changes() == []
    eng.recover()
    assert eng.store.stray_tmp() == [] and not eng.store.layer_new.exists()
    mnt = root_ns / "mnt"
    mnt.mkdir()
    eng.mount(mnt)
    try:
        assert (mnt / "etc/big").stat().st_size == 2 << 20
    finally:
        eng.umount(mnt)
    assert eng.verify().ok and meta.name == "rp"


def test_recovery_without_space_lets_delete_and_purge_free_it(
        small_fs: Path, root_ns: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = small_store(small_fs, root_ns)
    (eng.store.upper / "etc").mkdir()
    (eng.store.upper / "etc/a").write_text("a\n")
    eng.create(Kind.INCREMENTAL, name="old")
    eng.rollback("base")
    (eng.store.upper / "etc").mkdir()
    (eng.store.upper / "etc/b").write_text("b\n")
    eng.create(Kind.INCREMENTAL, name="mid")  # roottab.prev no longer names old
    (eng.store.upper / "etc").mkdir()
    (eng.store.upper / "etc/c").write_text("c\n")
    # the disk is full and an interrupted action waits: every recovery step fails
    fill(small_fs)

    def no_space(dry_run: bool) -> list[str]:
        if dry_run:
            return ["something"]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(eng, "_recovery", no_space)
    with pytest.raises(NoSpace, match="cannot be finished yet"):
        eng.recover()
    eng.delete("old")  # the hint's own remedy works
    eng.purge()
    mnt = root_ns / "mnt"
    mnt.mkdir()
    eng.mount(mnt)
    eng.umount(mnt)


# --- the child dies with ibi -------------------------------------------------------------

def test_mksquashfs_dies_with_a_killed_ibi(store: Engine, root_ns: Path) -> None:
    up = store.store.upper / "srv"
    up.mkdir()
    for i in range(4):
        (up / f"blob{i}").write_bytes(os.urandom(24 << 20))
    p = subprocess.Popen([sys.executable, "-m", "maintenance.cli", "create", "--incremental",
                          "--compressor", "xz", "--quiet", "--data", str(store.data_dir),
                          "--run-dir", str(root_ns / "run")], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    for _ in range(200):
        out = subprocess.run(["pgrep", "-f", f"mksquashfs {store.store.upper}"],
                             capture_output=True, text=True).stdout.split()
        if out:
            child = int(out[0])
            break
        time.sleep(0.05)
    assert child is not None, "mksquashfs never started"
    p.send_signal(signal.SIGKILL)
    p.wait()
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or \
                Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("mksquashfs kept running after ibi was killed")
    assert store.recover()  # its temp file is removed
    assert store.store.stray_tmp() == []


# --- RAM overlays -------------------------------------------------------------------------

GiB = 1 << 30


MEMINFO = "MemTotal: 8388608 kB\nMemFree: 1000 kB\nMemAvailable: 6291456 kB\n"


@pytest.mark.parametrize("spec, want", [
    (None, 3 * GiB), ("25%", 2 * GiB), ("512M", 512 << 20), ("2G", 2 * GiB),
    ("1M", 64 << 20), ("90%", 8 * GiB * 9 // 10 // 4096 * 4096),
])
def test_review_tmpfs_size_rule(spec: str | None, want: int) -> None:
    assert review_tmpfs_bytes(spec, MEMINFO) == want


@pytest.mark.parametrize("spec", ["0%", "95%", "1G,uid=0", "lots", "-1G", "1.5G", "%", "1"])
def test_review_tmpfs_size_refuses_options_and_nonsense(spec: str) -> None:
    with pytest.raises(UsageError, match="bad tmpfs size"):
        review_tmpfs_bytes(spec, MEMINFO)


def test_a_full_review_tmpfs_is_reported_and_fails_writes_cleanly(store: Engine,
                                                                  root_ns: Path) -> None:
    mnt = root_ns / "review"
    mnt.mkdir()
    store.review("base", mnt, tmpfs_size="64M")
    try:
        ram = store.status().ram.tmpfs
        assert len(ram) == 1 and ram[0].serves == str(mnt)
        assert 60 << 20 <= ram[0].total <= 68 << 20
        with pytest.raises(OSError) as e, open(mnt / "big", "wb") as f:
            while True:
                f.write(b"\1" * (1 << 20))
        assert e.value.errno == errno.ENOSPC
        notices = store.status().notices
        assert any(n.level is Level.ERROR and "full" in notice_text(n)
                   and str(mnt) in notice_text(n) for n in notices)
        p = ibi("watch-ram", "--data", str(store.data_dir))
        assert p.returncode == 1 and "CRITICAL" in p.stderr and str(mnt) in p.stderr
        assert (mnt / "etc/hostname").read_text() == "base-host\n"  # still readable
        (mnt / "big").unlink()
        (mnt / "after").write_text("room again\n")
    finally:
        store.umount(mnt)
    assert store.status().ram.tmpfs == ()
    assert Store(store.data_dir).layer_id()  # the store itself was never touched
    assert status_mod.RAM_WARN < status_mod.RAM_CRITICAL


def test_a_truncated_top_image_is_refused_before_mounting(store: Engine,
                                                          root_ns: Path) -> None:
    (store.store.upper / "etc").mkdir()
    (store.store.upper / "etc/motd").write_text("x\n")
    store.create(Kind.INCREMENTAL, name="inc1")
    img = store.store.image_path("inc1")
    os.truncate(img, img.stat().st_size - 4096)
    mnt = root_ns / "mnt"
    mnt.mkdir()
    with pytest.raises(IntegrityError, match="image 'inc1' refused"):
        store.mount(mnt)
    assert not mounts.is_mountpoint(mnt)
    r = store.mount(mnt, fallback=True)  # roottab.prev (base alone) is fine
    try:
        assert r.roottab == "roottab.prev" and list(r.stack) == ["base"]
    finally:
        store.umount(mnt)
