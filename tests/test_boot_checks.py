"""The initramfs's checks before it mounts anything (dracut-module/90ibi/ibi-lib.sh): every
image against its boot plan line (size, squashfs superblock; SHA-256 with
rd.ibi.verify=sha256), and the size of the Live Review's tmpfs. The shell functions run
under dash (else sh) against real images made by mksquashfs, beside their Python mirrors
(squash.check_superblock, bootplan.review_size_kib). The Live Review's tmpfs size rule,
/home bound into the root and the wait for the data partition, which need no image, are in
tests/test_boot_checks_system.py; ibi-lib.sh's driver (lib) in tests/boot_lib_kit.py."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from maintenance import bootplan, squash
from maintenance.model import ImageMeta, Kind
from maintenance.store import Store
from tests.boot_lib_kit import lib, mounts_under, umount_all


def check(st: Store, name: str, cmdline: str = "") -> tuple[int, str, str]:
    """ibi_check_image NAME: (exit status, IBI_ERROR, the log lines)."""
    r = lib(st.data, f'ibi_check_image {name} || {{ echo "$IBI_ERROR"; exit 1; }}', cmdline)
    return r.returncode, r.stdout.strip(), r.stderr.strip()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real squashfs image of a small root (an executable /sbin/init, a file, /home)."""
    if shutil.which("mksquashfs") is None:
        pytest.fail("mksquashfs is missing (apt-get install squashfs-tools)")
    base = tmp_path_factory.mktemp("image")
    tree = base / "tree"
    (tree / "sbin").mkdir(parents=True)
    (tree / "home").mkdir()
    (tree / "sbin/init").write_text("#!/bin/sh\n")
    (tree / "sbin/init").chmod(0o755)
    (tree / "etc").mkdir()
    (tree / "etc/data").write_bytes(os.urandom(300_000))  # several blocks past the superblock
    out = base / "img.sqfs"
    squash.mksquashfs(tree, out, compressor="gzip")
    return out


def make_store(tmp_path: Path, image: Path, names: tuple[str, ...] = ("base", "top"),
               roottab: str = "base\ntop\n") -> Store:
    """A store whose images are copies of ``image``, with metadata and a boot plan written
    by the engine's code (``top`` an incremental on ``base``)."""
    st = Store(tmp_path / "data")
    st.root.mkdir(parents=True)
    for i, name in enumerate(names):
        shutil.copyfile(image, st.image_path(name))
        kind, stack = (Kind.BASE, ()) if i == 0 else (Kind.INCREMENTAL, names[:i])
        st.write_meta(ImageMeta(
            name=name, kind=kind,
            created=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i),
            sha256=squash.sha256(image), size=image.stat().st_size, stack=stack,
            parent=stack[-1] if stack else None))
    st.roottab_path.write_text(roottab)
    bootplan.write(st)
    return st


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# --- the boot plan's image lines -------------------------------------------------------

def test_plan_lists_every_image_with_its_size_and_sha256(tmp_path: Path, image: Path) -> None:
    st = make_store(tmp_path, image)
    st.image_path("stray").write_bytes(b"no metadata")  # an image without metadata: no line
    bootplan.write(st)
    size, digest = image.stat().st_size, squash.sha256(image)
    lines = bootplan.path(st).read_text().splitlines()
    assert [ln for ln in lines if ln.startswith("image ")] == [
        f"image base {size} {digest}", f"image top {size} {digest}"]
    assert lines[2] == "ibi-boot-plan 1"  # version 1 still: older readers skip the lines
    # round trip: what the engine wrote is what the initramfs reads
    for name in ("base", "top"):
        r = lib(st.data, f"ibi_plan_image {name}")
        assert (r.returncode, r.stdout.split()) == (0, [str(size), digest])
    assert lib(st.data, "ibi_plan_image stray").returncode == 1
    # read once for a whole stack: the same figures; a name is not matched by its prefix
    files = " ".join(str(st.image_path(n)) for n in ("base", "top"))
    r = lib(st.data, f'ibi_check_prepare "{files}"; for n in base top to stray; do '
            'ibi_plan_lookup "$n" && echo "$n $IBI_PLAN_FOUND" || echo "$n none"; done')
    assert r.stdout.splitlines() == [f"base {size} {digest}", f"top {size} {digest}",
                                     "to none", "stray none"]
    # the stacks are read as before, the image lines in between
    r = lib(st.data, 'ibi_plan_stack normal && echo "$IBI_NAMES"')
    assert r.stdout.strip() == "base top"
    assert lib(st.data, "ibi_plan_current").returncode == 0


def test_good_images_pass_both_checks(tmp_path: Path, image: Path) -> None:
    st = make_store(tmp_path, image)
    assert check(st, "top")[:2] == (0, "")
    rc, _, log = check(st, "top", "rd.ibi.verify=sha256")
    assert rc == 0 and "verifying the SHA-256 of image 'top'" in log
    verified = (tmp_path / "run/verified").read_text().split("\n")
    assert verified[0] == f"top {image.stat().st_size} {squash.sha256(image)}"
    # once verified in this boot, not hashed again (the menu, then the sysroot)
    rc, _, log = check(st, "top", "rd.ibi.verify=sha256")
    assert rc == 0 and "verifying" not in log
    assert squash.check_superblock(st.image_path("top"), image.stat().st_size) is None


DAMAGE = {
    # name: (how the image is damaged, the reason both checks give)
    "truncated": (lambda p, n: os.truncate(p, n // 2),
                  "the file has {half} bytes, its metadata says {size}"),
    "grown": (lambda p, n: p.open("ab").write(b"\0" * 4096),
              "the file has {grown} bytes, its metadata says {size}"),
    "bad magic": (lambda p, n: patch(p, 0, b"HSQS"), "not a squashfs image (no hsqs magic)"),
    "version 3": (lambda p, n: patch(p, 28, b"\3\0"), "squashfs version 3.0, not 4.0"),
    "block size": (lambda p, n: patch(p, 12, (3000).to_bytes(4, "little")),
                   "bad squashfs block size 3000"),
    "block log": (lambda p, n: patch(p, 22, (13).to_bytes(2, "little")),
                  "bad squashfs block size 131072"),
    "bytes_used": (lambda p, n: patch(p, 40, (n + 1).to_bytes(8, "little")),
                   "truncated: the superblock says {size1} bytes, the file has {size}"),
    "bytes_used huge": (lambda p, n: patch(p, 47, b"\x80"), "bad squashfs bytes_used"),
    "empty": (lambda p, n: os.truncate(p, 0), "the file has 0 bytes, its metadata says {size}"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=str)
def test_a_damaged_image_is_refused_in_one_line(tmp_path: Path, image: Path,
                                                damage: str) -> None:
    st = make_store(tmp_path, image)
    size = image.stat().st_size
    how, why = DAMAGE[damage]
    how(st.image_path("top"), size)
    why = why.format(size=size, half=size // 2, grown=size + 4096, size1=size + 1)
    rc, err, log = check(st, "top")
    assert (rc, err) == (1, f"image 'top' refused: {why}")
    assert log == f"err: image 'top' refused: {why}"  # the console and the journal: one line
    # the engine's mirror says the same
    assert squash.check_superblock(st.image_path("top"), size) == why
    assert check(st, "base")[:2] == (0, "")


def test_truncated_image_without_plan_lines_is_caught_by_its_superblock(
        tmp_path: Path, image: Path) -> None:
    """A plan written by an older ibi has no image lines: the superblock alone decides."""
    st = make_store(tmp_path, image)
    plan = bootplan.path(st)
    plan.write_text("".join(ln for ln in plan.read_text().splitlines(keepends=True)
                            if not ln.startswith("image ")))
    rc, err, log = check(st, "top", "rd.ibi.verify=sha256")
    assert rc == 0 and "the boot plan gives no size" in log
    assert "no SHA-256 in the boot plan" in log
    used = int.from_bytes(image.read_bytes()[40:48], "little")  # mksquashfs pads to 4K
    os.truncate(st.image_path("top"), used - 1)
    rc, err, _ = check(st, "top")
    assert (rc, err) == (1, f"image 'top' refused: truncated: the superblock says {used} "
                            f"bytes, the file has {used - 1}")
    os.truncate(st.image_path("top"), 20)
    assert check(st, "top")[1] == ("image 'top' refused: shorter than a squashfs superblock "
                                   "(20 bytes)")


def test_a_corrupted_byte_needs_sha256(tmp_path: Path, image: Path) -> None:
    st = make_store(tmp_path, image)
    path = st.image_path("top")
    patch(path, 100_000, bytes([path.read_bytes()[100_000] ^ 0xFF]))
    assert check(st, "top")[:2] == (0, "")  # size and superblock are intact
    rc, err, log = check(st, "top", "rd.ibi.verify=sha256")
    assert rc == 1
    assert err == (f"image 'top' refused: SHA-256 {squash.sha256(path)}, its metadata says "
                   f"{squash.sha256(image)}")
    assert log.splitlines()[-1] == f"err: {err}"
    assert not (tmp_path / "run/verified").exists()


@pytest.mark.parametrize("value", ["sha1", "", "SHA256"])
def test_an_unknown_verify_mode_warns_and_does_the_cheap_check(tmp_path: Path, image: Path,
                                                              value: str) -> None:
    st = make_store(tmp_path, image)
    patch(st.image_path("top"), 100_000, b"\0\0\0\0")  # only SHA-256 would see it
    rc, _, log = check(st, "top", f"rd.ibi.verify={value}")
    assert rc == 0
    assert log == (f"warning: rd.ibi.verify={value} is not sha256 or quick: checking sizes "
                   "and superblocks only")
    assert check(st, "top", "rd.ibi.verify=quick") == (0, "", "")


def test_the_top_image_is_checked_first(tmp_path: Path, image: Path) -> None:
    st = make_store(tmp_path, image)
    patch(st.image_path("base"), 0, b"XXXX")
    patch(st.image_path("top"), 0, b"YYYY")
    r = lib(st.data, 'ibi_check_images "base top" || echo "$IBI_ERROR"')
    assert r.stdout.strip().startswith("image 'top' refused")


# --- with real mounts: a refused image mounts nothing -----------------------------------

def assemble(st: Store, how: str, names: str = "base top",
             cmdline: str = "") -> subprocess.CompletedProcess[str]:
    target = st.data.parent / "sysroot"
    target.mkdir(exist_ok=True)
    (st.data / "layer/upper").mkdir(parents=True, exist_ok=True)
    (st.data / "layer/work").mkdir(exist_ok=True)
    return lib(st.data, f'ibi_assemble {target} "{names}" {how} || '
                        '{ echo "ERR $IBI_ERROR"; exit 1; }', cmdline)


def test_assembly_refuses_a_damaged_image_before_mounting(root_ns: Path, image: Path) -> None:
    st = make_store(root_ns, image)
    os.truncate(st.image_path("top"), 4096)
    r = assemble(st, "layer")
    assert r.returncode == 1
    assert r.stdout.strip() == (f"ERR image 'top' refused: the file has 4096 bytes, its "
                                f"metadata says {image.stat().st_size}")
    assert mounts_under(root_ns) == []
    assert not (root_ns / "run/lower").exists() or not any((root_ns / "run/lower").iterdir())
    # the same images whole: assembled
    shutil.copyfile(image, st.image_path("top"))
    r = assemble(st, "layer", cmdline="rd.ibi.verify=sha256")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert (root_ns / "sysroot/sbin/init").is_file()
    finally:
        umount_all(root_ns)


def test_a_stack_past_one_lowerdir_list_is_assembled(root_ns: Path, image: Path) -> None:
    """120 images: "120:119:...:1" is over fsconfig(2)'s 255 bytes, so the initramfs
    passes one lowerdir+= per image (Linux >= 6.8), as the engine does."""
    from maintenance.mounts import max_depth, mount_at

    if max_depth() < 120:
        pytest.skip(f"Linux {os.uname().release} has no lowerdir+= (needs 6.8)")
    names = ("base", *(f"p{i}" for i in range(119)))
    st = make_store(root_ns, image, names, "".join(f"{n}\n" for n in names))
    r = assemble(st, "layer", " ".join(names))
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        info = mount_at(root_ns / "sysroot")
        assert info is not None and info.fstype == "overlay"
        assert "lowerdir+=120,lowerdir+=119," in info.options, info.options
        assert (root_ns / "sysroot/sbin/init").is_file()
        assert len(list((root_ns / "run/lower").iterdir())) == 120
    finally:
        umount_all(root_ns)
    r = assemble(st, "layer", "base p0 p1")  # a short one: one lowerdir= list
    try:
        info = mount_at(root_ns / "sysroot")
        assert info is not None and "lowerdir=3:2:1," in info.options, info.options
    finally:
        umount_all(root_ns)


# --- the Live Review's tmpfs --------------------------------------------------------------

def test_the_review_tmpfs_is_mounted_with_that_size(root_ns: Path, image: Path) -> None:
    st = make_store(root_ns, image)
    r = assemble(st, "tmpfs", cmdline="rd.ibi.review_size=96M")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "the Live Review's tmpfs: 98304 KiB (rd.ibi.review_size=96M)" in r.stderr
        review = root_ns / "run/review"
        fs = os.statvfs(review)
        assert fs.f_blocks * fs.f_frsize == 96 * 1024 * 1024
        opts = next(ln.split() for ln in Path("/proc/self/mounts").read_text().splitlines()
                    if ln.split()[1] == str(review))
        assert opts[2] == "tmpfs" and "size=98304k" in opts[3], opts
    finally:
        umount_all(root_ns)


def test_plan_lines_with_anything_but_image_names_are_left_out(tmp_path: Path,
                                                               image: Path) -> None:
    """A damaged plan cannot make the initramfs mount a path or a pattern."""
    st = make_store(tmp_path, image)
    plan = bootplan.path(st)
    plan.write_bytes(plan.read_bytes() + b"menu ../../etc base\nmenu b*\nmenu \xffbase\n"
                     b"menu .hidden\nreview top ../x\nmenu base\n")
    r = lib(st.data, "ibi_plan_stacks menu; ibi_plan_stacks review top")
    assert r.stdout.splitlines() == ["base top", "base", "base", "base top"], r.stdout


# --- boot counting: the trial's lines, counted before the stack is assembled -------------

def on_trial(st: Store, tries: int) -> None:
    """The engine's trial: roottab [base top] on trial, [base] the good stack."""
    from maintenance.model import Trial

    st.write_trial(Trial(("base", "top"), ("base",), tries,
                         dt.datetime(2026, 1, 9, tzinfo=dt.UTC), "switch"))
    bootplan.write(st)


def test_each_boot_on_trial_is_counted_until_the_tries_are_used(tmp_path: Path,
                                                                 image: Path) -> None:
    st = make_store(tmp_path, image)
    r = lib(st.data, "ibi_count_boot && echo go")
    assert r.stdout.strip() == "go" and not st.boots_path.exists()  # not on trial
    on_trial(st, 2)
    plan = bootplan.path(st).read_text()
    assert "\ntrial 2\ngood base\n" in plan
    r = lib(st.data, "ibi_count_boot && echo go")
    assert r.stdout.strip() == "go"
    assert "warning: the stack is on trial: boot 1 of 2" in r.stderr
    assert st.count_boots() == 1  # the engine reads what the shell wrote
    r = lib(st.data, "ibi_count_boot && echo go")
    assert r.stdout.strip() == "go" and "LAST boot (2 of 2)" in r.stderr
    assert "falls back to: base" in r.stderr
    r = lib(st.data, "ibi_count_boot || echo fall back")
    assert r.stdout.strip() == "fall back" and st.count_boots() == 2  # not counted again
    # a line cut short by a power cut still counts
    st.boots_path.write_text("boot 1\nbo")
    assert lib(st.data, "ibi_boots_counted").stdout.strip() == "2"
    assert st.count_boots() == 2


def test_a_trial_of_another_stack_counts_nothing(tmp_path: Path, image: Path) -> None:
    st = make_store(tmp_path, image)
    on_trial(st, 1)
    st.roottab_path.write_text("base\n")  # changed since (by hand): the trial is void
    bootplan.write(st)
    assert "trial" not in bootplan.path(st).read_text().split("ibi-boot-plan")[1]
    r = lib(st.data, "ibi_count_boot && echo go")
    assert r.stdout.strip() == "go" and not st.boots_path.exists()


@pytest.mark.parametrize("line", ["trial 2x", "trial", "trial -1", "trial 2;reboot"])
def test_a_damaged_trial_line_counts_nothing(tmp_path: Path, image: Path, line: str) -> None:
    st = make_store(tmp_path, image)
    plan = bootplan.path(st)
    plan.write_text(plan.read_text() + f"{line}\ngood base\n")
    r = lib(st.data, "ibi_count_boot && echo go")
    assert r.stdout.strip() == "go" and not st.boots_path.exists()


def test_a_whole_stack_is_checked_with_one_stat(tmp_path: Path, image: Path) -> None:
    """ibi_check_images takes every size from one stat: a grown or missing image is still
    refused in one line, and the sizes it read are the files' own."""
    st = make_store(tmp_path, image, names=("base", "mid", "top"), roottab="base\nmid\ntop\n")
    size = image.stat().st_size
    r = lib(st.data, 'ibi_check_images "base mid top" && echo ok')
    assert r.stdout.splitlines()[0] == "ok", r.stderr
    with open(st.image_path("mid"), "ab") as f:
        f.write(b"\0" * 4096)
    r = lib(st.data, 'ibi_check_images "base mid top" || echo "$IBI_ERROR"')
    assert r.stdout.strip() == (f"image 'mid' refused: the file has {size + 4096} bytes, "
                                f"its metadata says {size}")
    st.image_path("mid").unlink()
    r = lib(st.data, 'ibi_check_images "base mid top" || echo "$IBI_ERROR"')
    assert r.stdout.strip().startswith("image 'mid' refused: cannot read ")
