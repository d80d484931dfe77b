"""Kernels per restore point, as a user meets them: on the installed disk (booted through
GRUB), Debian's linux-image-cloud-amd64 is installed with dpkg in the running system; the
next boot runs it (its modules load); a restore point takes it in; a Live Review of the
base, chosen in GRUB's menu, boots the base's own kernel on a tmpfs, without the newer
changes; a roll back to the base boots that kernel by default; and Restore System after
another kernel upgrade in the layer boots the old kernel again.

One machine, five boots in sequence (each depends on the one before).

    sudo python3 -m pytest -m vm tests/vm/test_kernel_upgrade.py -v -s
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import guest as guestmod
import pytest
import recipe
from installed import transfer_disk
from qemu import VM

pytestmark = pytest.mark.vm

DATA = "--data /run/ibi/data"
MODULE = "dummy"  # a loadable module in both flavours that nothing loads at boot


@pytest.fixture(scope="module")
def cloud_disk(guest: guestmod.Guest, vm_workdir: Path) -> tuple[Path, str]:
    """A transfer disk with linux-image-cloud-amd64 (the guest has no network), and the
    kernel version it installs."""
    debs = recipe.extra_kernel_debs(guestmod.cache_dir() / "debs")
    image = next(d for d in debs if d.name.startswith("linux-image-6"))
    version = image.name.split("_")[0].removeprefix("linux-image-")
    return transfer_disk(vm_workdir / "cloud-kernel.img", debs), version


def install_cloud_kernel(vm: VM, version: str) -> str:
    """dpkg -i as a user would: the package's dracut hook builds its initramfs (with the ibi
    module, from the package's dracut.conf.d), then ibi's hook keeps both for the next boot."""
    vm.check("mkdir -p /mnt/xfer && mount -o ro LABEL=ibixfer /mnt/xfer")
    t = time.monotonic()
    out = vm.check("dpkg -i /mnt/xfer/*.deb 2>&1 | tail -n 20", timeout=1200)
    print(f"\n[vm] dpkg -i of linux-image-{version} (its dracut hook, then ibi's): "
          f"{time.monotonic() - t:.0f} s", flush=True)
    vm.check("umount /mnt/xfer")
    assert vm.check(f"test -d /usr/lib/modules/{version} && echo yes") == "yes", out
    assert f"ibi: boot entries renewed; the next boot uses Linux {version}" in out, out
    return out


def module_loads(vm: VM) -> None:
    assert vm.run(f"grep -q '^{MODULE} ' /proc/modules")[0] == 1, "loaded before modprobe"
    vm.check(f"modprobe {MODULE}")
    assert vm.check(f"grep -c '^{MODULE} ' /proc/modules") == "1"


@pytest.mark.vm_long
def test_kernels_follow_the_stack(scenario: Callable[..., VM],
                                  cloud_disk: tuple[Path, str]) -> None:
    xfer, cloud = cloud_disk
    # 1. the installed system; a second kernel installed in it
    vm = scenario("upgrade", drives=(xfer,))
    vm.boot()
    generic = vm.check("uname -r")
    assert generic != cloud and generic.endswith("-amd64")
    install_cloud_kernel(vm, cloud)
    status = vm.check(f"ibi status {DATA}", timeout=180)
    print(f"\n[vm] ibi status after dpkg -i {cloud}:\n{status}", flush=True)
    assert f"kernel installed in the layer (Restore System discards it): {cloud}" in status
    assert f"Next boot: Linux {cloud}" in status
    entries = vm.check(f"ibi boot-entries {DATA}")
    assert f"normal boot: Linux {cloud}" in entries
    assert f"Maintenance Mode: Linux {generic}" in entries  # the stack's own, never the layer's
    # what GRUB will load: the package-built initramfs, with the ibi module in it
    kid = vm.check(f"ls /run/ibi/data/boot/kernels | grep -F {cloud}-")
    assert vm.check(f"grep -c /boot/kernels/{kid}/vmlinuz /run/ibi/data/boot/grub/grub.cfg") \
        == "1"
    assert "ibi-assemble" in vm.check(
        f"lsinitrd /run/ibi/data/boot/kernels/{kid}/initrd.img | grep ibi-assemble",
        timeout=300)
    vm.poweroff()

    # 2. the next boot runs the new kernel; its modules load; a restore point takes it in
    vm = scenario("new-kernel")
    vm.boot()
    assert vm.check("uname -r") == cloud
    module_loads(vm)
    vm.check("echo in the layer > /root/layer-marker.txt")
    vm.check(f"ibi create --incremental --next-boot --name cloud -m 'cloud kernel' {DATA}")
    vm.poweroff()

    # 3. Live Review of the base from GRUB: the restore point queued above is made first (in
    #    the initramfs), then the base boots with the base's kernel, and its modules load
    vm = scenario("review-base", choose="Live Review of base")
    vm.boot()
    assert vm.check("cat /run/ibi/mode") == "review base"
    opts = vm.check("findmnt -n -o OPTIONS /")
    assert "upperdir=/run/ibi/review/upper" in opts, opts
    assert vm.check("cat /home/alice/notes.txt") == "hello from alice"  # the real /home
    # the layer's file went into the restore point above the base: not in the review
    assert vm.run("test -e /root/layer-marker.txt")[0] == 1, "a newer change leaked in"
    vm.check("echo scratch > /root/scratch.txt")
    assert vm.run("test -e /run/ibi/data/layer/upper/root/scratch.txt")[0] == 1
    assert vm.check("uname -r") == generic
    module_loads(vm)
    # the capture after boot runs here too, but a review's configuration is not the system's
    vm.run("timeout 300 systemctl is-system-running --wait", timeout=330)
    assert vm.check("systemctl show -p Result --value ibi-state-save.service") == "success"
    reasons = vm.check("ibi state list --json | python3 -c 'import json, sys; "
                       "print(*(c[\"reason\"] for c in json.load(sys.stdin)[\"captures\"]))'")
    assert "boot" not in reasons.split(), reasons
    status = vm.check(f"ibi status {DATA}", timeout=180)
    print(f"\n[vm] ibi status with a restore point per kernel:\n{status}", flush=True)
    assert f"kernel {cloud} (also {generic})" in status
    assert f"kernel {generic}\n" in status + "\n"  # the base's
    assert "kernel installed in the layer" not in status
    assert f"Next boot: Linux {cloud}" in status
    out = vm.check(f"ibi rollback base --next-boot --yes {DATA}")
    assert "will run at the next boot" in out
    assert f"normal boot: Linux {generic}" in vm.check(f"ibi boot-entries {DATA}")
    vm.poweroff()

    # 4. the roll back ran at boot; the default entry boots the base's kernel
    vm = scenario("rolled-back", drives=(xfer,))
    vm.boot()
    assert vm.check("cat /run/ibi/mode") == "normal roottab"
    assert vm.check(f"ibi status {DATA} | grep -c ' cloud '") == "1"  # kept, not in the stack
    assert vm.check("cat /run/ibi/data/.root_images/roottab | grep -v '^#'") == "base"
    assert vm.check("uname -r") == generic
    module_loads(vm)
    # the kernel upgraded again in the layer, then Restore System queued
    install_cloud_kernel(vm, cloud)
    assert f"Next boot: Linux {cloud}" in vm.check(f"ibi status {DATA}", timeout=180)
    vm.check(f"ibi restore --next-boot --yes {DATA}")
    assert f"normal boot: Linux {generic}" in vm.check(f"ibi boot-entries {DATA}")
    vm.poweroff()

    # 5. Restore System discarded the kernel with the layer: the old one boots, and works
    vm = scenario("restored")
    vm.boot()
    assert vm.check("uname -r") == generic
    assert vm.run(f"test -e /usr/lib/modules/{cloud}")[0] == 1
    module_loads(vm)
    status = vm.check(f"ibi status {DATA}", timeout=180)
    assert "kernel installed in the layer" not in status
    assert f"Next boot: Linux {generic}" in status
    print("\n[vm] kept kernels:\n" + vm.check("du -sh /run/ibi/data/boot/kernels/*"),
          flush=True)
    verify = vm.check(f"ibi verify --all {DATA}", timeout=600)
    assert verify.count("ok ") >= 4 and "BAD" not in verify, verify  # 2 images, 2 kernels
    vm.poweroff()
