"""A conventional Debian disk, booted through its own bootloader like a user's machine.

:func:`conventional_disk` builds (once; cached under ``$IBI_VM_CACHE``) a sparse 8 GiB raw
image with an msdos partition table:

- partition 1: ext4 labelled ``debroot`` (3.5 GiB) holding the guest rootfs with the test
  settings of :func:`guest.configure`, a real ``/etc/fstab`` (``UUID=... / ext4``), an
  initramfs built by the guest's own dracut and GRUB for BIOS installed the way Debian
  does it (``grub-install --target=i386-pc`` onto the disk, ``update-grub``), on a serial
  console with a visible 5 second menu;
- partition 2: the rest (about 4.5 GiB), left empty, without a file system: the ibi
  installer formats it.

Tests never write to the cached image: they boot qcow2 overlays of it (:func:`overlay`).
The cache key is the rootfs tarball's name plus this file and the parts of guest.py it uses.

Run ``python3 tests/vm/disk.py`` (as root) to build it by hand.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guest

DISK_SIZE = "8G"
ROOT_LABEL = "debroot"
ROOT_SIZE_MIB = 3584  # partition 1; partition 2 takes the rest of the disk
FIRST_SECTOR = 2048  # 1 MiB: leaves GRUB's core.img room before partition 1 (as Debian does)

GRUB_DEFAULT = """\
# ibi VM test disk: a conventional Debian install on a serial console.
# If you change this file, run 'update-grub' afterwards to update /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_TIMEOUT_STYLE=menu
GRUB_DISTRIBUTOR=`( . /etc/os-release && echo ${NAME} )`
# no "quiet": the test harness reads the kernel's messages on the console
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200 net.ifnames=0 systemd.show_status=1"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""

DRACUT_CONF = """\
# ibi VM test disk: initramfs built inside the running guest only hold what this machine needs
hostonly="yes"
hostonly_cmdline="no"
"""


def log(msg: str) -> None:
    print(f"[vm-disk] {msg}", file=sys.stderr, flush=True)


def disk_key(rootfs_tar: Path) -> str:
    """The rootfs, this file, and the guest.py settings the disk is made with."""
    used = "".join(inspect.getsource(obj) for obj in (guest.configure,)) + "".join(
        (guest.AUTOLOGIN, guest.BASHRC, guest.GUEST_HOSTNAME, guest.INITRD_DRIVERS))
    return guest.hash_paths([Path(__file__).resolve()], rootfs_tar.name + used)


def conventional_disk() -> Path:
    """The cached raw image of the conventional Debian disk (built if missing)."""
    tar, _ = guest.ensure_rootfs()
    c = guest.cache_dir()
    out = c / f"conventional-{disk_key(tar)}.raw"
    with guest.locked(c / "disk.lock"):
        if out.is_file():
            return out
        timings = build(tar, out)
        (c / f"{out.stem}.timings.json").write_text(json.dumps(timings))
        keep = {out.name, f"{out.stem}.timings.json"}
        for old in [*c.glob("conventional-*.raw"), *c.glob("conventional-*.timings.json")]:
            if old.name not in keep:
                old.unlink()
    return out


def build_timings(disk: Path) -> dict[str, float]:
    """The timings recorded when ``disk`` was built (empty if unknown)."""
    f = disk.with_name(f"{disk.stem}.timings.json")
    try:
        data: dict[str, float] = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return data


def overlay(disk: Path, path: Path) -> Path:
    """A qcow2 copy-on-write overlay of the raw ``disk`` at ``path`` (one per boot scenario)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    guest.sh(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disk),
              str(path)])
    return path


# --- the build ----------------------------------------------------------------------------

@contextlib.contextmanager
def loop_partition(image: Path, start: int, size: int) -> Iterator[str]:
    """Partition 1 of ``image`` as a loop device (offset and size limit, not ``losetup -P``:
    a host kernel may lack the msdos partition parser); always detached at the end."""
    dev = guest.sh(["losetup", "--find", "--show", "--offset", str(start * 512),
                    "--sizelimit", str(size * 512), str(image)],
                   stdout=subprocess.PIPE).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@contextlib.contextmanager
def mounted(dev: str, where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    guest.sh(["mount", dev, str(where)])
    try:
        yield where
    finally:
        subprocess.run(["sync", "-f", str(where)], check=False)
        subprocess.run(["umount", str(where)], check=False)


def fs_uuid(dev: str) -> str:
    uuid = guest.sh(["blkid", "-p", "-s", "UUID", "-o", "value", dev],
                    stdout=subprocess.PIPE).stdout.strip()
    if not uuid:
        raise RuntimeError(f"no file system UUID on {dev}")
    return uuid


def dracut_script(tree: Path, kver: str) -> str:
    """The disk's initramfs, made by the guest's dracut in a chroot (private mount namespace)."""
    return f"""set -e
T={tree}
mount --rbind /dev "$T/dev"
mount -t proc proc "$T/proc"
mount --rbind /sys "$T/sys"
mount -t tmpfs tmpfs "$T/tmp"
mount -t tmpfs tmpfs "$T/run"
chroot "$T" dracut --force --no-hostonly --no-hostonly-cmdline \\
    --drivers "{guest.INITRD_DRIVERS}" /boot/initrd.img-{kver} {kver}
"""


SETUP_SCRIPT = "root/ibi-grub-setup"
SETUP_OK = "IBI-GRUB-SETUP-OK"
SETUP_FAILED = "IBI-GRUB-SETUP-FAILED"


def grub_setup_script(uuid: str) -> str:
    """PID 1 of the one-off setup boot: GRUB installed by the guest onto its own disk."""
    return f"""#!/bin/sh
# ibi VM test disk: install GRUB from inside the guest (removed once done)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# udev made this link in the initramfs; update-grub writes root=UUID= only if it exists
if [ ! -e /dev/disk/by-uuid/{uuid} ]; then
    mkdir -p /dev/disk/by-uuid && ln -s ../../vda1 /dev/disk/by-uuid/{uuid}
fi
echo "== grub-install"
if grub-install --target=i386-pc /dev/vda && echo "== update-grub" && update-grub; then
    status={SETUP_OK}
else
    status={SETUP_FAILED}
fi
umount /tmp
sync
mount -o remount,ro /
echo "$status"
# power off now (reboot(2) from this process; nothing runs after it touching the disk)
poweroff -f -f
echo o > /proc/sysrq-trigger
"""


def run_setup_boot(image: Path, kernel: Path, initrd: Path, uuid: str, log_file: Path) -> None:
    """Boot ``image`` once (qemu, direct kernel boot) with the setup script as init."""
    import qemu

    append = (f"root=UUID={uuid} rw init=/{SETUP_SCRIPT} console=ttyS0,115200 panic=-1 "
              "net.ifnames=0")
    for attempt in range(1, qemu.EARLY_RETRIES + 1):
        argv = qemu.qemu_argv(kernel, initrd, image, append, serial=f"file:{log_file}")
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"the GRUB setup boot did not end in 900 s (log: {log_file})") from None
        text = log_file.read_text(errors="replace")
        if SETUP_OK in text:
            return
        if SETUP_FAILED in text or qemu.INITRD_STARTED in text:
            break
        log(f"the GRUB setup boot crashed before the initramfs (try {attempt}); retrying")
    raise RuntimeError(f"installing GRUB in the setup boot failed (log: {log_file}):\n"
                       + log_file.read_text(errors="replace")[-6000:])


def build(tar: Path, out: Path) -> dict[str, float]:
    """Make the disk image at ``out`` (through ``out.part``); returns the step timings.

    The host only partitions the image and fills partition 1 (a loop device at its offset,
    the guest's own dracut in a chroot). GRUB is installed by the guest itself, in a
    one-off qemu boot of the disk with a script as init: ``grub-install /dev/vda`` and
    ``update-grub`` see a real partitioned disk with udev's /dev/disk/by-uuid, as on an
    installed machine (in a chroot on the host they would need a partitioned loop device,
    i.e. a host kernel with the msdos partition parser, plus udev for root=UUID=).
    """
    timings: dict[str, float] = {}
    t0 = t = time.monotonic()

    def step(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        timings[f"{name}_s"] = round(now - t, 1)
        t = now

    part = out.with_name(out.name + ".part")
    build_log = out.with_name("conventional-build.log")
    setup_log = out.with_name("conventional-setup-boot.log")
    log(f"building the conventional Debian disk -> {out} (logs: {build_log}, {setup_log})")
    for stale in out.parent.glob("conventional-*.raw.part"):
        stale.unlink()
    root_sectors = ROOT_SIZE_MIB * 2048
    try:
        guest.sh(["truncate", "-s", DISK_SIZE, str(part)])
        layout = (f"label: dos\nunit: sectors\n\n"
                  f"start={FIRST_SECTOR}, size={root_sectors}, type=83, bootable\n"
                  f"type=83\n")
        subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(part)],
                       input=layout, text=True, stdout=subprocess.DEVNULL, check=True)
        with tempfile.TemporaryDirectory(prefix="ibi-disk-") as tmp:
            boot_files = Path(tmp) / "boot"
            boot_files.mkdir()
            with loop_partition(part, FIRST_SECTOR, root_sectors) as p1:
                guest.sh(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, p1])
                uuid = fs_uuid(p1)
                step("partition_mkfs")
                with mounted(p1, Path(tmp) / "root") as tree:
                    guest.sh(["tar", "-xpf", str(tar), "--numeric-owner", "--xattrs",
                              "--xattrs-include=*", "-C", str(tree)])
                    step("extract")
                    guest.configure(tree)
                    (tree / "etc/fstab").write_text(
                        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
                        f"UUID={uuid} / ext4 errors=remount-ro 0 1\n")
                    (tree / "etc/default/grub").write_text(GRUB_DEFAULT)
                    kver = guest.kernel_version(tree)
                    with build_log.open("w") as fh:
                        subprocess.run(
                            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             dracut_script(tree, kver)],
                            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin",
                                     LC_ALL="C.UTF-8"), check=True)
                    initrd = tree / f"boot/initrd.img-{kver}"
                    if not initrd.is_file():
                        raise RuntimeError(f"dracut made no /boot/initrd.img-{kver}")
                    shutil.copy2(tree / f"boot/vmlinuz-{kver}", boot_files / "vmlinuz")
                    shutil.copy2(initrd, boot_files / "initrd.img")
                    # written after dracut ran: initramfs made later in the guest are host-only
                    conf = tree / "etc/dracut.conf.d/10-ibi-vmtest.conf"
                    conf.parent.mkdir(parents=True, exist_ok=True)
                    conf.write_text(DRACUT_CONF)
                    setup = tree / SETUP_SCRIPT
                    setup.write_text(grub_setup_script(uuid))
                    setup.chmod(0o755)
                    step("configure_dracut")
            log("installing GRUB from a one-off boot of the disk")
            run_setup_boot(part, boot_files / "vmlinuz", boot_files / "initrd.img", uuid,
                           setup_log)
            step("grub_setup_boot")
            with loop_partition(part, FIRST_SECTOR, root_sectors) as p1:
                with mounted(p1, Path(tmp) / "root") as tree:
                    (tree / SETUP_SCRIPT).unlink()
                    check_grub_cfg(tree / "boot/grub/grub.cfg", uuid, kver)
                fsck = subprocess.run(["e2fsck", "-f", "-p", p1], check=False,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                if fsck.returncode not in (0, 1):
                    raise RuntimeError(f"e2fsck of the root file system exited "
                                       f"{fsck.returncode}")
        with part.open("rb") as fh:
            mbr = fh.read(512)
        if b"GRUB" not in mbr[:446] or mbr[510:] != b"\x55\xaa":
            raise RuntimeError("no GRUB boot code in the disk's MBR")
        step("check")
        os.replace(part, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    timings["total_s"] = round(time.monotonic() - t0, 1)
    log(f"conventional disk built: {timings}")
    return timings


def check_grub_cfg(cfg: Path, uuid: str, kver: str) -> None:
    """Fail loudly unless grub.cfg boots our kernel with root=UUID= of partition 1."""
    if not cfg.is_file():
        raise RuntimeError(f"update-grub wrote no {cfg}")
    text = cfg.read_text()
    linux = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("linux\t")
             or ln.strip().startswith("linux ")]
    if not linux:
        raise RuntimeError(f"no linux line in grub.cfg:\n{text}")
    bad = [ln for ln in linux if f"root=UUID={uuid}" not in ln or kver not in ln]
    if bad:
        raise RuntimeError(f"grub.cfg does not boot {kver} with root=UUID={uuid}:\n"
                           + "\n".join(bad))
    if "terminal_output serial" not in text:
        raise RuntimeError(f"grub.cfg does not use the serial terminal:\n{text}")


if __name__ == "__main__":
    disk = conventional_disk()
    print(json.dumps({"disk": str(disk), "timings": build_timings(disk)}, indent=1))
