"""Boot a conventional Debian disk through its own bootloader, as a user's machine does.

The disk (tests/vm/disk.py, cached) has an msdos label, an ext4 root on vda1 with GRUB for
BIOS installed the Debian way, and an empty vda2 for the ibi installer. qemu boots it through
SeaBIOS and GRUB (no -kernel); GRUB's menu is read and driven on the serial console.

    sudo python3 -m pytest -m vm tests/vm/test_disk_boot.py -v -s
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from disk import overlay
from qemu import BOOT_TIMEOUT, PROMPT, VM, grub_choose, grub_menu

pytestmark = pytest.mark.vm

BiosBoot = Callable[..., VM]
DEBIAN = "Debian GNU/Linux"
ADVANCED = "Advanced options for Debian GNU/Linux"


def test_default_entry_boots_the_conventional_root(conventional_disk: Path,
                                                    bios_boot: BiosBoot,
                                                    tmp_path: Path) -> None:
    """No key pressed: GRUB's countdown boots the default entry to the autologin shell."""
    menus: list[list[str]] = []
    vm = bios_boot(overlay(conventional_disk, tmp_path / "disk.qcow2"), "default",
                   bootloader=lambda vm: menus.append(grub_menu(vm)))
    seconds = vm.boot()
    print(f"[vm] GRUB menu: {menus[0]}; default entry to a root shell in {seconds} s")
    assert menus[0] == [DEBIAN, ADVANCED], menus[0]

    assert vm.check("findmnt -n -o FSTYPE /") == "ext4"
    assert vm.check("findmnt -n -o SOURCE /") == "/dev/vda1"
    cmdline = vm.check("cat /proc/cmdline")
    assert "root=UUID=" in cmdline and "BOOT_IMAGE=" in cmdline, cmdline  # GRUB passed it
    assert "single" not in cmdline.split(), cmdline
    uuid = vm.check("findmnt -n -o UUID /")
    assert f"root=UUID={uuid}" in cmdline, cmdline
    assert vm.check("findmnt -n -o LABEL /") == "debroot"
    assert vm.check("awk '$2 == \"/\" {print $1}' /etc/fstab") == f"UUID={uuid}"

    # vda2: a partition of its own (about 4.5 GiB) with no file system on it
    assert vm.check("lsblk -dn -o FSTYPE /dev/vda2") == ""
    size = int(vm.check("lsblk -bdn -o SIZE /dev/vda2"))
    assert 4 * 2**30 < size < 5 * 2**30, size
    assert vm.check("wipefs --no-act /dev/vda2") == "", "a signature on vda2"
    print(vm.check("lsblk -o NAME,FSTYPE,LABEL,SIZE,MOUNTPOINTS /dev/vda"))
    assert vm.check("systemctl is-system-running --wait || true", timeout=300) in (
        "running", "degraded")


def test_grub_navigates_to_recovery_mode(conventional_disk: Path, bios_boot: BiosBoot,
                                         tmp_path: Path) -> None:
    """Arrow keys in GRUB's menu: Advanced options, then the recovery mode entry."""
    seen: dict[str, list[str] | str] = {}

    def recovery(vm: VM) -> None:
        seen["menu"] = grub_menu(vm)
        seen["chosen"] = grub_choose(vm, "Advanced options")
        seen["submenu"] = grub_menu(vm)
        seen["entry"] = grub_choose(vm, "(recovery mode)")

    # the installer tests' machine size: two CPUs, 1.5 GiB
    vm = bios_boot(overlay(conventional_disk, tmp_path / "disk.qcow2"), "recovery",
                   bootloader=recovery, smp=2, memory="1536")
    print(f"[vm] GRUB menu: {seen['menu']}; submenu: {seen['submenu']}; "
          f"chose {seen['entry']!r}")
    assert seen["chosen"] == ADVANCED
    submenu = seen["submenu"]
    assert isinstance(submenu, list) and len(submenu) == 2, submenu
    assert submenu[0].startswith(f"{DEBIAN}, with Linux "), submenu
    assert submenu[1] == f"{submenu[0]} (recovery mode)", submenu

    # rescue.target: sulogin asks for root's password (empty here: Enter is enough)
    i = vm.expect(["Press Enter for (system )?maintenance",
                   "Give root password for (system )?maintenance", PROMPT], timeout=BOOT_TIMEOUT)
    if i < 2:
        vm.send("\r")
    vm.wait_for_shell()
    print(f"[vm] recovery mode to a root shell in {vm.boot_seconds} s")
    cmdline = vm.check("cat /proc/cmdline").split()
    assert "single" in cmdline, cmdline
    assert vm.check("systemctl is-active rescue.target || true") == "active"
    assert vm.check("findmnt -n -o SOURCE /") == "/dev/vda1"
    assert vm.check("nproc") == "2"
    mem_kib = int(vm.check("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
    assert 1300 * 1024 < mem_kib <= 1536 * 1024, mem_kib
