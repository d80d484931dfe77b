"""The writable layer a restore point cleared is deleted after ``create`` returns
(maintenance/reclaim.py): in the background after ``ibi create``, by ``ibi reclaim``, and
first of all when an action runs short of space. Crash points: tests/test_crash.py
(test_interrupted_reclaim). No timing here: bench/create_bench.py measures."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maintenance import reclaim
from maintenance.engine import Engine
from maintenance.errors import NoSpace
from maintenance.model import Kind
from tests.fstree import build_base

ROOT = Path(__file__).resolve().parent.parent


def ibi(*args: str, background: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if background:
        env.pop("IBI_RECLAIM", None)  # as a user's shell has it
    return subprocess.run([sys.executable, "-m", "maintenance.cli", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)


def changed(eng: Engine, root: Path, blob: int = 1 << 20) -> None:
    """Write ``blob`` random bytes and a few small files into the writable layer."""
    mnt = root / "mnt"
    mnt.mkdir(exist_ok=True)
    eng.mount(mnt)
    try:
        (mnt / "var/lib").mkdir(parents=True, exist_ok=True)
        (mnt / "var/lib" / f"blob-{time.monotonic_ns()}").write_bytes(os.urandom(blob))
        for i in range(50):
            (mnt / "etc" / f"conf-{i}").write_text(f"{i}\n")
    finally:
        eng.umount(mnt)


@contextlib.contextmanager
def small_store(engine: Engine, root_ns: Path) -> Iterator[None]:
    """A store on a 96 MiB data partition with one restore point, rp1: a 30 MiB image,
    and the 30 MiB layer it cleared waiting for ibi reclaim."""
    data = engine.store.data
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "ibi-small", str(data)],
                   check=True)
    try:
        tree = root_ns / "tree"
        build_base(tree)
        engine.init(source_dir=tree)
        changed(engine, root_ns, blob=30 << 20)
        engine.create(Kind.INCREMENTAL, name="rp1")
        yield
    finally:
        subprocess.run(["umount", str(data)], check=True)


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    changed(engine, root_ns)
    return engine


def reclaimers(data: Path) -> list[int]:
    """The pids of ``ibi reclaim`` processes working on ``data``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"reclaim" in argv and str(data).encode() in argv:
            out.append(int(d.name))
    return out


def test_create_leaves_the_cleared_layer_to_reclaim(store: Engine, root_ns: Path) -> None:
    store.create(Kind.INCREMENTAL, name="rp")
    entries = store.store.trash_entries()
    assert [p.name.endswith("-squashed") for p in entries] == [True]
    assert (entries[0] / "upper/etc/conf-7").read_text() == "7\n"  # set aside whole
    assert store.changes() == [] and store.roottab() == ["base", "rp"]
    assert reclaim.waiting_bytes(store) > 1 << 20
    assert store.store.set_aside_layers() == []  # never put back by an undo
    assert "trash" not in {n.code for n in store.status().notices}  # not for ibi purge
    assert store.status().disk.trash > 1 << 20  # but counted on the disk
    freed = store.reclaim()
    assert freed > 0
    assert store.store.trash_entries() == [] and reclaim.waiting(store) == []
    assert store.reclaim() == 0  # nothing left: a no-op
    assert store.status().disk.trash < 1 << 20
    assert store.verify(all_images=True).ok


def test_ibi_create_reclaims_in_the_background(store: Engine) -> None:
    data = store.store.data
    p = ibi("create", "--incremental", "--name", "rp", "--data", str(data), "--quiet",
            background=True)
    assert p.returncode == 0, p.stderr
    end = time.monotonic() + 60
    while (reclaim.waiting(store) or reclaimers(data)) and time.monotonic() < end:
        time.sleep(0.1)
    assert reclaim.waiting(store) == [], "the background reclaim did not finish in 60 s"
    assert reclaimers(data) == []
    assert store.roottab() == ["base", "rp"] and store.changes() == []


def test_initramfs_leaves_it_for_later_and_ibi_reclaim_does_it(store: Engine) -> None:
    data = str(store.store.data)
    assert os.environ.get("IBI_RECLAIM") == "later"  # tests/conftest.py, as the hook sets it
    assert ibi("create", "--incremental", "--data", data, "--quiet").returncode == 0
    time.sleep(0.5)
    assert len(reclaim.waiting(store)) == 1 and reclaimers(store.store.data) == []
    p = ibi("reclaim", "--data", data, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["freed"] >= 0
    assert reclaim.waiting(store) == []
    p = ibi("reclaim", "--data", data)
    assert (p.returncode, p.stdout.strip()) == (0, "freed 0 B")


def test_an_action_short_of_space_reclaims_first(engine: Engine, root_ns: Path) -> None:
    """On a 96 MiB data partition, a second restore point fits only once the first one's
    cleared layer is deleted: create does that itself instead of failing."""
    data = engine.store.data
    with small_store(engine, root_ns):
        changed(engine, root_ns, blob=12 << 20)
        free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
        assert free < (12 << 20) + (16 << 20), "the partition is not short enough"
        engine.create(Kind.INCREMENTAL, name="rp2")
        assert engine.roottab() == ["base", "rp1", "rp2"]
        assert len(reclaim.waiting(engine)) == 1  # rp2's layer waits; rp1's is gone
        # when even the reclaimed space is not enough, the shortage is refused as before
        changed(engine, root_ns, blob=24 << 20)
        with pytest.raises(NoSpace):
            engine.create(Kind.INCREMENTAL, name="rp3")
        assert engine.roottab() == ["base", "rp1", "rp2"] and engine.changes() != []
        assert reclaim.waiting(engine) == []


def test_a_stream_import_short_of_space_reclaims_first(engine: Engine, root_ns: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An image read from standard input (its size unknown until the end) fits a 96 MiB
    data partition only once the cleared layer of the last restore point is deleted: the
    import deletes it when the stream runs short, instead of failing."""
    from maintenance import squash

    data = engine.store.data
    src = root_ns / "import-tree"
    (src / "usr/bin").mkdir(parents=True)
    (src / "etc").mkdir()
    (src / "etc/os-release").write_text("ID=debian\n")
    (src / "usr/bin/big").write_bytes(os.urandom(24 << 20))
    image = root_ns / "in.sqfs"
    squash.mksquashfs(src, image)
    with small_store(engine, root_ns):
        waiting = reclaim.waiting(engine)
        free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
        assert len(waiting) == 1 and free < image.stat().st_size + (16 << 20), \
            "the partition is not short enough"
        with open(image, "rb") as f:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
            meta = engine.import_image("-", name="imported")
        assert meta.name == "imported" and engine.store.has_image("imported")
        assert reclaim.waiting(engine) == []
