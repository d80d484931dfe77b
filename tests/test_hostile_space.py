"""Hostile and unlucky stores (issue 10), as tests/test_hostile.py (kit: tests/hostile_kit.py):
a full disk after the commit point, the mksquashfs child that dies with a killed ibi, the RAM
overlays (the review tmpfs's size rule, a full review tmpfs) and a truncated top image. Each
case once lost data or wedged ibi; each must now give one clear line and lose nothing. Cases
needing no mounts run as an ordinary user too."""

from __future__ import annotations

import errno
import os
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
from maintenance.errors import IntegrityError, NoSpace, UsageError
from maintenance.model import Kind, Level
from maintenance.store import Store
from maintenance.wording import notice_text
from tests import hostile_kit
from tests.fstree import build_base
from tests.hostile_kit import ROOT, ibi

# the fixture, by name: pytest finds it in this module
store = hostile_kit.store


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
