"""ibi import's refusals and crashes on real stores and real mounts (as tests/test_import.py;
kit: tests/import_kit.py): every bad input is one line on stderr and leaves the store exactly
as it was; a crash at each step leaves the old store or the new one after recovery."""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from maintenance import cli, imports, importsrc, kernels, kernelstore, records
from maintenance import create as create_mod
from maintenance import store as store_mod
from maintenance.engine import Engine
from maintenance.errors import NoSpace
from maintenance.model import Kind
from maintenance.run import run
from tests import import_kit
from tests.fstree import build_base
from tests.import_kit import Ibi, assert_imported, fingerprint, root_tree, same_store, squashed
from tests.test_crash import CRASH, after_nth

pytestmark = pytest.mark.root

# the fixtures, by name: pytest finds them in this module
_images_dir = import_kit._images_dir
ibi = import_kit.ibi
image = import_kit.image
store = import_kit.store


# --------------------------------------------------------------------------- refusals

def refused(ibi: Ibi, rc: int, match: str, *args: str) -> None:
    """The command fails with ``rc`` and one line matching ``match``, store unchanged."""
    before = fingerprint(ibi.eng.data_dir)
    assert ibi("import", "-q", *args) == rc, ibi.out + ibi.err
    line = ibi.one_line_error()
    assert re.search(match, line), line
    assert fingerprint(ibi.eng.data_dir) == before
    assert ibi.eng.store.stray_tmp() == [] and ibi.eng.store.stray_kernel_tmp() == []


def test_a_digest_mismatch_is_refused(ibi: Ibi, image: Path) -> None:
    refused(ibi, 1, r"has sha256 [0-9a-f]{64}, not the 0{64} expected \(--sha256\)",
            "--image", str(image), "--sha256", "0" * 64)
    refused(ibi, 2, "is not a SHA-256 digest", "--image", str(image), "--sha256", "abc")


def test_a_sibling_metadata_mismatch_is_refused(ibi: Ibi, root_ns: Path, image: Path) -> None:
    other = Engine(root_ns / "other", root_ns / "run")
    other.data_dir.mkdir()
    other.init(source_dir=root_tree(root_ns / "other-tree"))
    dest = root_ns / "copy"
    dest.mkdir()
    shutil.copy(other.store.root / "base.yaml", dest / "point.yaml")
    shutil.copy(image, dest / "point.sqfs")  # another image than its metadata describes
    refused(ibi, 1, r"point\.sqfs has (sha256|\d+ bytes).*its metadata \(point\.yaml\) says",
            "--image", str(dest / "point.sqfs"))
    shutil.copy(other.store.root / "base.sqfs", dest / "point.sqfs")
    meta = other.store.read_meta("base")
    text = (dest / "point.yaml").read_text().replace(meta.sha256, "f" * 64)
    (dest / "point.yaml").write_text(text)
    refused(ibi, 1, rf"has sha256 {meta.sha256}, not the f{{64}} its metadata",
            "--image", str(dest / "point.sqfs"))
    (dest / "point.yaml").write_text("format: 1\nname: [\n")
    refused(ibi, 1, r"point\.yaml: unreadable metadata .*cannot check the image against it",
            "--image", str(dest / "point.sqfs"))
    # an incremental restore point works only on its own stack
    (other.store.upper / "changed").write_text("x\n")
    other.create(Kind.INCREMENTAL, name="inc")
    refused(ibi, 2, r"inc\.sqfs is an incremental restore point: it works only on the "
            r"stack it was made on \(base\)", "--image", str(other.store.image_path("inc")))


def test_what_is_not_a_sound_squashfs_image_is_refused(ibi: Ibi, root_ns: Path,
                                                       image: Path) -> None:
    junk = root_ns / "in" / "junk.sqfs"
    junk.write_bytes(b"not a squashfs image\n" * 1000)
    refused(ibi, 1, r"junk\.sqfs: not a squashfs image \(no hsqs magic\)",
            "--image", str(junk))
    short = root_ns / "in" / "short.sqfs"
    data = image.read_bytes()
    short.write_bytes(data[: len(data) // 2])
    refused(ibi, 1, r"short\.sqfs: truncated: the superblock says \d+ bytes, the file has",
            "--image", str(short))
    empty = root_ns / "in" / "empty.sqfs"
    empty.touch()
    refused(ibi, 1, r"empty\.sqfs: shorter than a squashfs superblock", "--image", str(empty))
    refused(ibi, 1, r"image file .*nowhere\.sqfs does not exist",
            "--image", str(root_ns / "nowhere.sqfs"))
    refused(ibi, 2, r"is a directory, not a squashfs image", "--image", str(root_ns / "in"))
    refused(ibi, 2, r"cannot import from ftp:// URLs", "--image", "ftp://example.org/x.sqfs")


def test_a_truncated_stream_is_refused(ibi: Ibi, image: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = image.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data[: len(data) - 4096])))
    refused(ibi, 1, r"standard input: truncated: the superblock says", "--image", "-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    refused(ibi, 1, r"standard input is empty", "--image", "-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"PK\3\4" + data)))
    refused(ibi, 1, r"standard input: not a squashfs image", "--image", "-")


def test_a_tree_that_is_not_a_root_is_refused(ibi: Ibi, root_ns: Path) -> None:
    no_usr = squashed(root_tree(root_ns / "t1", usr=False, kernel=False),
                      root_ns / "in" / "no-usr.sqfs")
    refused(ibi, 1, r"no-usr\.sqfs is not a root file system: it has no /usr directory",
            "--image", str(no_usr))
    no_etc = squashed(root_tree(root_ns / "t2", etc=False), root_ns / "in" / "no-etc.sqfs")
    refused(ibi, 1, r"no-etc\.sqfs is not a root file system: it has no /etc directory",
            "--image", str(no_etc))
    assert not list((ibi.eng.run_dir / "stacks").glob("image-*"))  # unmounted, removed


def test_names_in_use_and_bad_names_are_refused(ibi: Ibi, image: Path) -> None:
    refused(ibi, 2, r"an image named 'base' already exists", "--image", str(image),
            "--name", "base")
    st = ibi.eng.store
    (st.root / "ghost.yaml").write_text(records.meta_to_yaml(st.read_meta("base"))
                                        .replace("name: base", "name: ghost"))
    refused(ibi, 2, r"an image named 'ghost' already exists", "--image", str(image),
            "--name", "ghost")
    # a name roottab.prev or another image's stack names stands in for that image
    st.roottab_prev_path.write_text("base\nlost\n")
    refused(ibi, 2, r"an image named 'lost' already exists \(or a stack names it\)",
            "--image", str(image), "--name", "lost")
    refused(ibi, 2, r"bad image name '\.\./evil'", "--image", str(image), "--name", "../evil")
    refused(ibi, 2, r"bad image name 'x\.sqfs'", "--image", str(image), "--name", "x.sqfs")


def test_a_stream_is_stopped_before_the_disk_is_full(engine: Engine, root_ns: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    big = squashed(root_tree(root_ns / "big", big=40 << 20), root_ns / "in" / "big.sqfs")
    run(["mount", "-t", "tmpfs", "-o", "size=48m", "tiny", str(engine.data_dir)])
    try:
        tree = root_ns / "base-tree"
        build_base(tree)
        (tree / "var/lib/sparse").unlink()
        engine.init(source_dir=tree)
        before = fingerprint(engine.data_dir)
        with pytest.raises(NoSpace, match=r"not enough space to import .*big\.sqfs: needs"):
            engine.import_image(str(big))
        with open(big, "rb") as f:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
            with pytest.raises(NoSpace, match=r"not enough space to import standard input: "
                               r".* received, .* free on .*\(ibi keeps 16.0 MiB free\)"):
                engine.import_image("-")
        assert fingerprint(engine.data_dir) == before
        assert engine.store.stray_tmp() == []
    finally:
        run(["umount", str(engine.data_dir)])


# --------------------------------------------------------------------------- crashes

def test_an_exception_midway_leaves_the_store_unchanged(ibi: Ibi, image: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    before = fingerprint(ibi.eng.data_dir)
    real_write_meta = store_mod.Store.write_meta

    def write_then_fail(self: store_mod.Store, meta: object) -> None:
        real_write_meta(self, meta)  # type: ignore[arg-type]
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as mp:
        mp.setattr(store_mod.Store, "write_meta", write_then_fail)
        assert ibi("import", "-q", "--image", str(image)) == 1
    assert "Input/output error" in ibi.one_line_error()
    # its metadata and its kernel's copy are gone too
    assert same_store(before, fingerprint(ibi.eng.data_dir))

    calls = {"n": 0}
    real_room = importsrc._room

    def interrupt(*a: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_room(*a)  # type: ignore[arg-type]

    big = squashed(root_tree(ibi.eng.run_dir.parent / "big", big=3 << 20),
                   ibi.eng.run_dir.parent / "in" / "big.sqfs")
    with monkeypatch.context() as mp:
        mp.setattr(importsrc, "_room", interrupt)
        assert ibi("import", "-q", "--image", str(big)) == 130
    assert calls["n"] == 2 and ibi.err == "ibi: interrupted\n"
    assert same_store(before, fingerprint(ibi.eng.data_dir))
    assert ibi("recover") == 0 and ibi.out == "nothing to recover\n"


def die_after(mp: pytest.MonkeyPatch, owner: object, name: str, n: int = 1,
              before: bool = False) -> None:
    """Die (like a power cut: no clean-up) at the n-th call of owner.name, before it runs
    or just after it returns (tests/test_crash.py's)."""
    after_nth(mp, owner, name, n, before)


CRASH_POINTS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], bool]] = {
    # point: (arm it, whether the image is in after recovery)
    "mid-copy": (lambda mp: die_after(mp, importsrc, "_room", 3, before=True), False),
    "copied": (lambda mp: die_after(mp, imports, "_check_digest"), False),
    "mounted, checked": (lambda mp: die_after(mp, imports, "_check_tree"), False),
    "mid kernel copy": (lambda mp: die_after(mp, kernelstore, "_copy_hashed"), False),
    "kernel kept": (lambda mp: die_after(mp, kernels, "keep"), False),
    "metadata written": (lambda mp: die_after(mp, store_mod.Store, "write_meta"), False),
    "image renamed in": (lambda mp: die_after(mp, create_mod, "durable_rename"), True),
    "boot plan renewed": (lambda mp: die_after(mp, Engine, "_refresh_quietly", 2), True),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_crash_leaves_the_old_store_or_the_new(store: Engine, root_ns: Path,
                                                 point: str) -> None:
    img = squashed(root_tree(root_ns / "tree", big=3 << 20), root_ns / "in" / "new.sqfs")
    before = fingerprint(store.data_dir)
    arm, imported = CRASH_POINTS[point]
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            mp = pytest.MonkeyPatch()
            arm(mp)
            Engine(store.data_dir, store.run_dir).import_image(str(img))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == CRASH
    fresh = Engine(store.data_dir, store.run_dir)
    assert cli.main(["recover", "--data", str(store.data_dir), "--run-dir",
                     str(store.run_dir), "-q"]) == 0
    assert not list((store.run_dir / "stacks").glob("image-*"))
    if imported:
        assert_imported(fresh, "new", img)
        assert fresh.verify(all_images=True).ok
    else:
        assert same_store(before, fingerprint(store.data_dir)), point
        # and the same import then goes through
        fresh.import_image(str(img))
        assert_imported(fresh, "new", img)
