"""What making a restore point faster must keep (issue 12, item 4): the image's fsync runs
in a thread while the image is checked and hashed from the page cache, and mksquashfs's
output starts going to the disk while it is written. The recorded sha256 and size are
still those of the bytes in the file, the progress still comes from the caller's thread,
a failing or interrupted fsync still leaves the old state, and the squash still gives a
whole image. No timing here: bench/create_bench.py measures."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from maintenance import create as create_mod
from maintenance import squash
from maintenance.engine import Engine
from maintenance.fsio import fsync_file as real_fsync
from maintenance.model import Kind, Progress
from tests.fstree import apply_changes, build_base
from tests.test_crash import CRASH, after_nth, crash_in_child


@pytest.fixture
def changed(engine: Engine, root_ns: Path) -> Engine:
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    mnt = root_ns / "mnt"
    mnt.mkdir()
    engine.mount(mnt)
    try:
        apply_changes(mnt)
        # more than one mksquashfs block
        (mnt / "var/lib/blob").write_bytes(os.urandom(1 << 20) + bytes(1 << 20))
    finally:
        engine.umount(mnt)
    return engine


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_recorded_digest_and_size_are_the_files(changed: Engine) -> None:
    meta = changed.create(Kind.INCREMENTAL, name="rp")
    image = changed.store.image_path("rp")
    assert meta.sha256 == file_sha256(image) == changed.store.read_meta("rp").sha256
    assert meta.size == image.stat().st_size
    assert squash.check_superblock(image, meta.size) is None
    assert changed.verify(all_images=True).ok


def test_progress_comes_from_the_callers_thread(changed: Engine) -> None:
    seen: list[tuple[str, str]] = []

    def progress(p: Progress) -> None:
        seen.append((p.phase, threading.current_thread().name))

    changed.create(Kind.INCREMENTAL, name="rp", progress=progress)
    phases = [p for p, _ in seen]
    assert "squashing" in phases and "verifying" in phases
    assert phases.index("squashing") < phases.index("verifying")
    assert {t for _, t in seen} == {threading.main_thread().name}


def test_the_image_is_fsynced_before_its_metadata(changed: Engine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_meta = changed.store.write_meta

    def fsync(path: Path) -> None:
        real_fsync(path)
        order.append(f"fsync {path.suffix}")

    def write_meta(meta):  # type: ignore[no-untyped-def]
        order.append("meta")
        real_meta(meta)

    monkeypatch.setattr(create_mod, "fsync_file", fsync)
    monkeypatch.setattr(changed.store, "write_meta", write_meta)
    changed.create(Kind.INCREMENTAL, name="rp")
    assert order == ["fsync .sqfs", "meta"]


def test_a_failing_fsync_keeps_the_old_state(changed: Engine,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path) -> None:
        raise OSError(5, "Input/output error")

    before = changed.changes()
    monkeypatch.setattr(create_mod, "fsync_file", fail)
    with pytest.raises(OSError, match="Input/output"):
        changed.create(Kind.INCREMENTAL, name="rp")
    assert changed.roottab() == ["base"] and changed.changes() == before
    assert not changed.store.has_image("rp") and not changed.store.meta_path("rp").exists()
    assert changed.store.stray_tmp() == []


@pytest.mark.parametrize("point", ["in the fsync", "after the fsync", "while hashing",
                                   "hashed"])
def test_a_crash_between_squash_and_commit_keeps_the_old_state(
        changed: Engine, point: str) -> None:
    arms: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
        "in the fsync": functools.partial(after_nth, owner=create_mod, name="fsync_file",
                                          n=1, before=True),
        "after the fsync": functools.partial(after_nth, owner=create_mod,
                                             name="fsync_file", n=1, before=False),
        "while hashing": lambda mp: mp.setattr(
            squash, "sha256", lambda *a, **kw: os._exit(CRASH)),
        "hashed": functools.partial(after_nth, owner=squash, name="sha256", n=1,
                                    before=False),
    }
    before = changed.changes()
    code = crash_in_child(lambda: changed.create(Kind.INCREMENTAL, name="rp"), arms[point])
    assert code == CRASH
    fresh = Engine(changed.data_dir, changed.run_dir)
    fresh.recover()
    assert fresh.roottab() == ["base"] and fresh.changes() == before
    assert not fresh.store.has_image("rp") and not fresh.store.meta_path("rp").exists()
    assert fresh.store.stray_tmp() == []


def test_the_squash_starts_writeback_of_its_own_output(root_ns: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = root_ns / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}").write_bytes(os.urandom(1 << 20))
    dest = root_ns / "out.sqfs"
    kicked: list[bool] = []
    real = squash._start_writeback

    def kick(fd: int) -> None:
        kicked.append(os.path.samestat(os.fstat(fd), os.stat(dest)))
        real(fd)

    monkeypatch.setattr(squash, "_start_writeback", kick)
    fds = set(os.listdir("/proc/self/fd"))
    squash.mksquashfs(src, dest)
    assert set(os.listdir("/proc/self/fd")) <= fds  # the descriptor it opened is closed
    assert kicked and all(kicked)  # (mksquashfs reports its progress at least at the end)
    squash.check_image(dest)
    assert squash.check_superblock(dest, dest.stat().st_size) is None


class Stop(Exception):
    pass


def test_an_interrupted_squash_closes_what_it_opened(root_ns: Path) -> None:
    src = root_ns / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(1 << 20))
    dest = root_ns / "out.sqfs"

    def stop(p: Progress) -> None:
        assert dest.exists()  # made by mksquashfs before its first progress line
        raise Stop

    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(Stop):
        squash.mksquashfs(src, dest, progress=stop)
    assert set(os.listdir("/proc/self/fd")) <= fds
