"""`ibi install`'s refusals on real block devices (loop devices), as a user meets them: one
line, a non-zero exit, nothing changed. The install itself converts the machine it runs on,
so it is exercised end to end in a VM (tests/vm/test_install.py: pytest collects modules by
their base name, hence this file's other name)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import ibi, one_line_error


@pytest.fixture
def loopdev(root_ns: Path) -> Iterator[tuple[str, Path]]:
    """An empty 64 MiB loop device."""
    img = root_ns / "disk.img"
    with img.open("wb") as f:
        f.truncate(64 << 20)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        yield dev, img
    finally:
        subprocess.run(["umount", dev], capture_output=True)
        subprocess.run(["losetup", "-d", dev], check=True)


def blkid(dev: str) -> str:
    return subprocess.run(["blkid", "-p", "-o", "export", dev], capture_output=True,
                          text=True).stdout


def test_not_a_block_device(root_ns: Path) -> None:
    f = root_ns / "file"
    f.write_text("x")
    p = ibi("install", "--dry-run", str(f))
    assert p.returncode == 2
    assert one_line_error(p) == f"ibi: error: {f} is not a block device"
    p = ibi("install", "--dry-run", str(root_ns / "nope"))
    assert p.returncode == 2 and "does not exist" in one_line_error(p)


def test_too_small(loopdev: tuple[str, Path]) -> None:
    dev, _ = loopdev
    p = ibi("install", "--dry-run", dev)
    assert p.returncode == 1
    err = one_line_error(p)
    assert err.startswith(f"ibi: error: {dev} is too small: 64.0 MiB, and ibi needs about ")
    assert "squashed at 0.55" in err and "choose a larger partition" in p.stderr
    assert blkid(dev) == ""  # nothing was written


def test_holding_data_or_mounted(loopdev: tuple[str, Path], root_ns: Path) -> None:
    dev, _ = loopdev
    subprocess.run(["mkfs.ext4", "-q", "-L", "precious", dev], check=True)
    p = ibi("install", "--dry-run", dev)
    assert p.returncode == 1
    assert one_line_error(p) == (f"ibi: error: {dev} holds a file system (ext4, label "
                                 "'precious'); ibi install formats it")
    assert "--force" in p.stderr
    mnt = root_ns / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", dev, str(mnt)], check=True)
    try:
        p = ibi("install", "--dry-run", "--force", dev)
        assert p.returncode == 1
        assert one_line_error(p) == f"ibi: error: {dev} is in use: mounted on {mnt}"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    # --force gets past the file system; this machine's root then makes it too small
    p = ibi("install", "--dry-run", "--force", dev)
    assert "is too small" in one_line_error(p)
    assert "LABEL=precious" in blkid(dev)  # untouched


def test_help_explains_the_install() -> None:
    p = ibi("install", "--help")
    assert p.returncode == 0
    for word in ("--dry-run", "--force", "--yes", "ibidata", "original system"):
        assert word in p.stdout


def test_fstab_for_the_image() -> None:
    from maintenance.install import _fstab_for_ibi

    text, swapfiles = _fstab_for_ibi(
        "# /etc/fstab\n"
        "UUID=aaa / ext4 errors=remount-ro 0 1\n"
        "UUID=bbb\t/home\text4\tdefaults 0 2\n"
        "UUID=ccc /boot/ ext4 defaults 0 2\n"
        "UUID=old /srv ext4 defaults 0 2\n"
        "/swapfile none swap sw 0 0\n"
        "/dev/sdb2 none swap sw 0 0\n"
        "LABEL=x /home/alice/data ext4 defaults 0 2\n", {"UUID=old", "/dev/sdz1"})
    lines = text.splitlines()
    off = [ln.removeprefix("#ibi# ") for ln in lines if ln.startswith("#ibi# ")]
    assert off == ["UUID=aaa / ext4 errors=remount-ro 0 1", "UUID=bbb\t/home\text4\tdefaults 0 2",
                   "UUID=ccc /boot/ ext4 defaults 0 2", "UUID=old /srv ext4 defaults 0 2",
                   "/swapfile none swap sw 0 0"]
    # a swap partition and a file system mounted below /home stay
    assert "/dev/sdb2 none swap sw 0 0" in lines
    assert "LABEL=x /home/alice/data ext4 defaults 0 2" in lines
    assert swapfiles == ["/swapfile"]
