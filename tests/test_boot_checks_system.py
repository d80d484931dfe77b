"""The initramfs's functions that read the system, not the images (dracut-module/90ibi/
ibi-lib.sh, under dash, else sh; kit: tests/boot_lib_kit.py): the size of the Live Review's
tmpfs from /proc/meminfo beside its Python mirror (bootplan.review_size_kib), /home bound
inside the assembled root, and the wait for the data partition. The image checks are in
tests/test_boot_checks.py."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from maintenance import bootplan
from maintenance.errors import UsageError
from tests.boot_lib_kit import MEMINFO, lib, mounts_under, umount_all

# --- the Live Review's tmpfs --------------------------------------------------------------

def review_kib(tmp_path: Path, spec: str | None,
               meminfo: str = MEMINFO) -> tuple[int, str, str]:
    cmdline = "" if spec is None else f"rd.ibi.review_size={spec}"
    r = lib(tmp_path / "data", 'ibi_review_size; echo "$IBI_REVIEW_KIB"; '
                               'echo "$IBI_REVIEW_WHY"', cmdline, meminfo)
    kib, why = r.stdout.splitlines()
    return int(kib), why, r.stderr.strip()


@pytest.mark.parametrize(("spec", "kib"), [
    (None, 750000),  # half of MemAvailable, rounded down to 4 KiB
    ("25%", 500000),
    ("1%", 65536),  # 20000 KiB: raised to 64 MiB
    ("90%", 1800000),
    ("512M", 524288),
    ("2G", 2097152),
    ("2g", 2097152),
    ("100000k", 100000),
    ("0100000K", 100000),  # leading zeros are not octal
    ("32M", 65536),
    ("999999999G", 999999999 * 1048576),
])
def test_review_size_follows_the_rule(tmp_path: Path, spec: str | None, kib: int) -> None:
    got, why, log = review_kib(tmp_path, spec)
    assert got == kib and got % 4 == 0 and log == ""
    assert bootplan.review_size_kib(spec, MEMINFO)[0] == kib
    if kib == 65536 and spec != "32M":
        assert why.endswith("raised to the 64 MiB minimum")


@pytest.mark.parametrize("spec", ["", "0%", "91%", "100%", "512", "1.5G", "abc", "2T", "-5M",
                                  "%", "50%%", "0M", "1234567890M", "5 M"])
def test_a_bad_review_size_warns_and_takes_the_default(tmp_path: Path, spec: str) -> None:
    if " " in spec:
        with pytest.raises(UsageError):
            bootplan.review_size_kib(spec, MEMINFO)
        return  # no kernel argument holds a blank
    got, why, log = review_kib(tmp_path, spec)
    assert (got, why) == (750000, "half of MemAvailable 1500002 kB")
    assert log == (f"warning: rd.ibi.review_size={spec} is not N% (1..90) or a size like "
                   "512M or 2G: using half of the available memory")
    with pytest.raises(UsageError, match=re.escape("is not N% (1..90) or a size like 512M or 2G")):
        bootplan.review_size_kib(spec, MEMINFO)


def test_review_size_without_memavailable_and_on_little_memory(tmp_path: Path) -> None:
    old_kernel = "MemTotal: 4000000 kB\nMemFree: 300002 kB\n"
    assert review_kib(tmp_path, None, old_kernel)[0] == 150000
    assert bootplan.review_size_kib(None, old_kernel)[0] == 150000
    tiny = "MemTotal: 100000 kB\nMemFree: 50000 kB\nMemAvailable: 60000 kB\n"
    assert review_kib(tmp_path, None, tiny)[:2] == (
        65536, "half of MemAvailable 60000 kB, raised to the 64 MiB minimum")
    assert bootplan.review_size_kib(None, tiny) == (
        65536, "half of MemAvailable 60000 kB, raised to the 64 MiB minimum")


# --- /home in the assembled root --------------------------------------------------------

@pytest.mark.parametrize("layout", ["dir", "absolute-link", "relative-link", "missing"])
def test_home_is_bound_inside_the_root(root_ns: Path, layout: str) -> None:
    data = root_ns / "data"
    (data / "home/alice").mkdir(parents=True)
    target = root_ns / "sysroot"
    (target / "var/home").mkdir(parents=True)
    where = {"dir": "home", "absolute-link": "var/home", "relative-link": "var/home",
             "missing": "home"}[layout]
    if layout == "dir":
        (target / "home").mkdir()
    elif layout == "absolute-link":
        os.symlink("/var/home", target / "home")  # from the initramfs: its own /var/home
    elif layout == "relative-link":
        os.symlink("var/home", target / "home")
    r = lib(data, f"ibi_bind_home {target}")
    try:
        assert r.returncode == 0, r.stderr
        assert mounts_under(target) == [str(target / where)], r.stderr
        assert (target / where / "alice").is_dir()
    finally:
        umount_all(target)


def a_block_device() -> str:
    for name in sorted(os.listdir("/sys/class/block")):
        if os.path.exists(f"/dev/{name}") and stat.S_ISBLK(os.stat(f"/dev/{name}").st_mode):
            return f"/dev/{name}"
    pytest.skip("no block device node in /dev")  # printed: a container without /dev


def test_waiting_for_the_data_partition_ends_when_it_appears(tmp_path: Path) -> None:
    """ibi_wait_dev returns as soon as the node is there (the initqueue does not wait for
    it in a systemd initrd): not at its next turn, not at the time limit."""
    dev = a_block_device()
    node = tmp_path / "disk"
    r = lib(tmp_path / "data", f"ibi_wait_dev {dev} 5 && echo found-at-once")
    assert r.returncode == 0 and r.stdout.strip() == "found-at-once", r.stderr
    t = time.monotonic()
    r = lib(tmp_path / "data", f"(sleep 0.5; ln -s {dev} {node}) & ibi_wait_dev {node} 60 "
            "&& echo found; wait")
    assert r.returncode == 0 and r.stdout.strip() == "found", r.stderr
    assert time.monotonic() - t < 30  # long before its 60 s limit


def test_a_missing_data_partition_gives_up_at_the_limit(tmp_path: Path) -> None:
    r = lib(tmp_path / "data", f"ibi_wait_dev {tmp_path}/never 1 || echo gave-up")
    assert r.returncode == 0 and r.stdout.strip() == "gave-up", r.stderr
    r = lib(tmp_path / "data", f"ibi_wait_dev {tmp_path}/never 6 || echo gave-up")
    assert r.stdout.strip() == "gave-up"
    assert f"notice: waiting for the data partition {tmp_path}/never" in r.stderr
