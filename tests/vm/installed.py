"""A machine set up the way a user does it, cached: the conventional Debian disk
(tests/vm/disk.py) booted through its GRUB, the ibi package installed with dpkg (brought in on
a second disk, like a USB stick: the guest has no network), /home given a user with an ACL, an
xattr and a hard link, then ``ibi install --yes /dev/vda2`` and a clean power-off.

The result is a qcow2 overlay of the conventional disk in the VM cache, keyed by that disk,
the package and this file; ``installed-<key>.json`` beside it keeps the timings and the
output of ``ibi install --dry-run`` and of the install. Used by tests/vm/test_install.py and
``scripts/demo --vm``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import disk as diskmod
import guest as guestmod
from qemu import VM

INSTALL_MEMORY = "1536"
HOME_SETUP = (
    "useradd -m -s /bin/bash alice && echo 'hello from alice' > /home/alice/notes.txt && "
    "ln /home/alice/notes.txt /home/alice/notes-link.txt && "
    "setfacl -m u:nobody:r /home/alice/notes.txt && "
    "python3 -c \"import os; os.setxattr('/home/alice/notes.txt', 'user.note', b'kept')\" && "
    "chown -R alice:alice /home/alice && chmod 0750 /home/alice"
)


def transfer_disk(path: Path, files: list[Path]) -> Path:
    """A small ext4 image (label ibixfer) holding ``files``: how the package reaches the
    guest, like a USB stick (the guest has no network)."""
    stage = path.with_name(path.name + ".d")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    for f in files:
        shutil.copy2(f, stage / f.name)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    guestmod.sh(["mkfs.ext4", "-q", "-F", "-L", "ibixfer", "-d", str(stage), str(path), "64M"])
    shutil.rmtree(stage)
    return path


def install_key(conventional: Path, deb: Path) -> str:
    return guestmod.hash_paths([Path(__file__)], conventional.name + deb.name)


def check_conventional(vm: VM) -> None:
    """The conventional disk as GRUB's default entry booted it, before ibi: the ext4 root
    on vda1 by UUID (GRUB passed root= and BOOT_IMAGE=), an empty vda2 of about 4.5 GiB."""
    assert vm.check("findmnt -n -o SOURCE,FSTYPE /").split() == ["/dev/vda1", "ext4"]
    assert vm.check("findmnt -n -o LABEL /") == "debroot"
    cmdline = vm.check("cat /proc/cmdline")
    uuid = vm.check("findmnt -n -o UUID /")
    assert f"root=UUID={uuid}" in cmdline and "BOOT_IMAGE=" in cmdline, cmdline
    assert "single" not in cmdline.split(), cmdline
    assert vm.check("awk '$2 == \"/\" {print $1}' /etc/fstab") == f"UUID={uuid}"
    assert vm.check("lsblk -dn -o FSTYPE /dev/vda2") == ""
    assert vm.check("wipefs --no-act /dev/vda2") == "", "a signature on vda2"
    size = int(vm.check("lsblk -bdn -o SIZE /dev/vda2"))
    assert 4 * 2**30 < size < 5 * 2**30, size


def do_install(conventional: Path, deb: Path, out: Path, logs: Path) -> dict[str, object]:
    """Boot the conventional disk, dpkg -i the package, ibi install onto /dev/vda2."""
    work = out.with_name(out.name + ".work.qcow2")
    diskmod.overlay(conventional, work)
    xfer = transfer_disk(out.with_name("xfer.img"), [deb])
    record: dict[str, object] = {}
    vm = VM(None, None, work, logs, "install", smp=2, memory=INSTALL_MEMORY, drives=[xfer])
    try:
        record["conventional_boot_s"] = vm.boot()
        check_conventional(vm)
        vm.check("mkdir -p /mnt/xfer && mount -o ro LABEL=ibixfer /mnt/xfer")
        t = time.monotonic()
        vm.check(f"dpkg -i /mnt/xfer/{deb.name} 2>&1 | tail -n 3", timeout=600)
        record["dpkg_s"] = round(time.monotonic() - t, 1)
        assert vm.check("command -v ibi") == "/usr/bin/ibi"
        vm.check(HOME_SETUP)
        rc, dry = vm.run("ibi install --dry-run /dev/vda2", timeout=600)
        assert rc == 0, dry
        record["dry_run"] = dry
        t = time.monotonic()
        rc, out_text = vm.run("ibi install --yes /dev/vda2 2>&1", timeout=3000)
        record["install_s"] = round(time.monotonic() - t, 1)
        record["install_output"] = out_text
        assert rc == 0, out_text
        vm.check("umount /mnt/xfer")
        vm.poweroff()
    finally:
        vm._kill()
    os.replace(work, out)
    return record


def installed_disk(logs: Path) -> tuple[Path, dict[str, object]]:
    """The cached disk after `dpkg -i` + `ibi install` (built if missing), and its record."""
    conventional = diskmod.conventional_disk()
    deb = guestmod.ensure_deb()
    c = guestmod.cache_dir()
    out = c / f"installed-{install_key(conventional, deb)}.qcow2"
    info = out.with_suffix(".json")
    with guestmod.locked(c / "installed.lock"):
        if not (out.is_file() and info.is_file()):
            guestmod.log("installing ibi into the conventional disk (boot, dpkg -i, "
                         "ibi install)")
            record = do_install(conventional, deb, out, logs)
            info.write_text(json.dumps(record, indent=1))
            for old in [*c.glob("installed-*.qcow2"), *c.glob("installed-*.json")]:
                if old.name not in (out.name, info.name):
                    old.unlink()
    return out, json.loads(info.read_text())


def planted_disk(installed: Path, out: Path, plant: Callable[[Path], None]) -> Path:
    """A raw copy of the installed disk whose data partition (vda2) ``plant(D)`` changed
    on the host, D being its mount point: the states a scenario needs (a deep stack, a
    corrupt roottab, files in the writable layer) without a boot to make them."""
    guestmod.sh(["qemu-img", "convert", "-O", "raw", str(installed), str(out)])
    table = json.loads(subprocess.run(["sfdisk", "--json", str(out)], check=True,
                                      capture_output=True, text=True).stdout)
    part = table["partitiontable"]["partitions"][1]
    loop = subprocess.run(["losetup", "-f", "--show", "-o", str(part["start"] * 512),
                           "--sizelimit", str(part["size"] * 512), str(out)],
                          check=True, capture_output=True, text=True).stdout.strip()
    mnt = out.with_name(out.name + ".mnt")
    mnt.mkdir(exist_ok=True)
    try:
        guestmod.sh(["mount", loop, str(mnt)])
        try:
            plant(mnt)
        finally:
            guestmod.sh(["umount", str(mnt)])
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
        mnt.rmdir()
    return out

