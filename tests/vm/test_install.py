"""ibi as a user gets it: a conventional Debian disk (ext4 root, GRUB on the disk, an empty
second partition) boots, the ibi package is installed with dpkg, ``ibi install`` converts the
machine, and from then on every boot goes through GRUB's menu on the serial console — no
``-kernel``/``-initrd``.

The installed disk is cached (a qcow2 overlay of the conventional disk, keyed by that disk,
the package and the install script below); each scenario boots an overlay of it.

    sudo python3 -m pytest -m vm tests/vm/test_install.py -v -s
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import qemu
from qemu import VM

pytestmark = pytest.mark.vm


def mode(vm: VM) -> str:
    return vm.check("cat /run/ibi/mode")


def test_default_boot_is_the_ibi_stack(installed: tuple[Path, dict[str, object]],
                                       scenario: Callable[..., VM]) -> None:
    record = installed[1]
    dry = str(record["dry_run"])
    assert "format /dev/vda2" in dry and "GRUB (i386-pc) on /dev/vda" in dry
    assert "original system on /dev/vda1" in dry and "nothing was changed" in dry
    titles: list[str] = []
    vm = scenario("default", menu=titles)
    vm.boot()
    expected = ["Debian GNU/Linux (ibi: 1 image, top base)",
                "Debian GNU/Linux (ibi Maintenance Mode)", "ibi Live Review of base (base, 20",
                "Original system on /dev/vda1 (before ibi install)"]
    assert len(titles) == len(expected), titles
    assert all(t.startswith(e) for t, e in zip(titles, expected, strict=True)), titles
    assert mode(vm) == "normal roottab"
    assert vm.check("findmnt -n -o FSTYPE /") == "overlay"
    assert vm.check("findmnt -n -o SOURCE /run/ibi/data") == "/dev/vda2"
    # /home came across with its owner, mode, ACL, xattr and hard link
    assert vm.check("cat /home/alice/notes.txt") == "hello from alice"
    assert vm.check("stat -c '%U %a' /home/alice") == "alice 750"
    assert vm.check("stat -c '%U %h' /home/alice/notes.txt") == "alice 2"
    assert "user:nobody:r--" in vm.check("getfacl -p /home/alice/notes.txt")
    assert vm.check("python3 -c \"import os; print(os.getxattr("
                    "'/home/alice/notes.txt', 'user.note').decode())\"") == "kept"
    assert vm.check("stat -c %h /home/alice/notes-link.txt") == "2"
    # the base is the root file system alone, its fstab adjusted
    assert "#ibi# UUID=" in vm.check("cat /etc/fstab")
    status = vm.check("ibi status --data /run/ibi/data", timeout=180)
    assert "base" in status and "installed from /dev/vda1" in status
    rc, out = vm.run("ibi install --dry-run /dev/vda1 2>&1")
    assert rc == 1 and "already an ibi image stack" in out
    assert vm.check("systemctl is-active ibi-protect.service") == "active"
    vm.poweroff()


@pytest.mark.vm_long
def test_original_system_still_boots(scenario: Callable[..., VM]) -> None:
    """Also the baseline boot time (the same machine without ibi): the protection check of
    the package, installed there too, says / is not protected."""
    vm = scenario("original", choose="Original system")
    vm.boot()
    assert vm.check("findmnt -n -o SOURCE,FSTYPE /").split() == ["/dev/vda1", "ext4"]
    assert "#ibi#" not in vm.check("cat /etc/fstab")  # the original root is untouched
    assert vm.run("test -e /run/ibi/mode")[0] == 1
    assert vm.run("systemctl is-failed ibi-protect.service")[1] == "failed"
    assert "NOT protected" in vm.check("journalctl -b -u ibi-protect --no-pager -o cat | cat")
    # no store here: the capture after boot is skipped (no /run/ibi/mode), not failed
    vm.run("timeout 300 systemctl is-system-running --wait", timeout=330)
    assert set(vm.check("systemctl show -p ConditionResult,ActiveState ibi-state-save.service"
                        ).split()) == {"ConditionResult=no", "ActiveState=inactive"}
    vm.poweroff()


@pytest.mark.vm_long
def test_broken_menu_is_loud(scenario: Callable[..., VM]) -> None:
    """A restore point whose menu package is gone: Maintenance Mode says so and offers a
    retry, a shell or to continue; it never boots on silently. (The restore point is made
    on the host, as ibi create would make it in the system: a layer that deletes the
    package's directory.)"""
    def no_menu(data: Path) -> None:
        from maintenance.engine import Engine
        from maintenance.model import Kind

        pkg = data / "layer/upper/usr/lib/python3/dist-packages"
        for d in (pkg.parents[2], pkg.parents[1], pkg.parent, pkg):
            d.mkdir(mode=0o755, exist_ok=True)
        os.mknod(pkg / "screens", stat.S_IFCHR, os.makedev(0, 0))  # a whiteout
        Engine(data, data.parent / "run").create(Kind.INCREMENTAL, name="no-menu")

    vm = scenario("broken", choose="Maintenance Mode", plant=no_menu)
    vm.expect("ibi: Maintenance Mode failed: ", timeout=qemu.BOOT_TIMEOUT)
    vm.expect("the maintenance menu cannot be loaded")
    vm.expect("Choose r, s or c: ")
    vm.send("r\r")  # a retry fails the same way, and says so again
    vm.expect("ibi: Maintenance Mode failed: ", timeout=300)
    vm.expect("Choose r, s or c: ")
    vm.send("s\r")
    vm.expect("ibi-initramfs# ", timeout=60)
    vm.send("ls /run/ibi/data/.root_images/no-menu.sqfs; exit\r")
    vm.expect("no-menu.sqfs", timeout=60)
    vm.expect("Choose r, s or c: ")
    vm.send("c\r")
    vm.wait_for_shell()
    assert mode(vm) == "normal roottab"
    assert vm.run("test -d /usr/lib/python3/dist-packages/screens")[0] == 1
    vm.poweroff()
