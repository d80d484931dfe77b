"""``ibi install``'s plan: :func:`make_plan` checks that this machine and DEVICE can be
used and changes nothing (``--dry-run`` prints it, :func:`describe` words it);
maintenance/install.py carries it out.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import mounts
from .blockdev import (
    _blkid,
    _devnos,
    _disk_of,
    _fs_uuid,
    _mount_of,
    _names_of,
    _on_dm_crypt,
    _size,
)
from .bootloader import Original
from .errors import IbiError, NoSpace, Unsuitable, UsageError
from .fsio import tree_bytes
from .run import run, which
from .status import human

# Measured: the Debian 13 guest of tests/vm/test_install.py (linux-image, dracut, grub,
# python3: 412.4 MiB used on its root) squashed to a 208.3 MiB base with zstd level 3, a
# ratio of 0.505. Rounded up, as roots with more binaries or media compress worse.
COMPRESSION_RATIO = 0.55
LAYER_HEADROOM = 512 << 20  # room for the writable layer's first changes
INITRD_ESTIMATE = 128 << 20
# mounts under / that are not part of the installed system (or are handled on their own)
NOT_SYSTEM_MOUNTS = ("/home", "/boot", "/proc", "/sys", "/dev", "/run", "/tmp", "/mnt",
                     "/media")


@dataclass(frozen=True)
class InstallPlan:
    device: str  # as given
    partition_disk: bool  # DEVICE is a whole disk: one partition is made on it
    device_size: int
    holds: str  # what blkid found on it ("" for nothing)
    label: str
    root_source: str  # the root file system's device
    root_bytes: int  # what the base image squashes (the root fs minus /home)
    home_bytes: int
    need: int  # estimated bytes the data partition needs
    kernel: str
    boot_disk: str  # where GRUB goes
    original: Original | None
    target_names: tuple[str, ...]  # how /etc/fstab may name DEVICE (old UUID=, LABEL=, ...)
    cmdline: str
    terminal: str
    terminals: str
    timeout: int
    distributor: str


GRUB_VARS = ("GRUB_TERMINAL", "GRUB_TERMINAL_INPUT", "GRUB_SERIAL_COMMAND", "GRUB_TIMEOUT",
             "GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")


def _default_grub() -> dict[str, str]:
    """GRUB's settings as grub-mkconfig sees them: /etc/default/grub and
    /etc/default/grub.d/*.cfg sourced by sh."""
    script = ('[ -r /etc/default/grub ] && . /etc/default/grub; '
              'for f in /etc/default/grub.d/*.cfg; do [ -r "$f" ] && . "$f"; done; '
              + "".join(f'printf "%s\\0" "${{{v}:-}}"; ' for v in GRUB_VARS))
    r = run(["sh", "-c", script], check=False)
    values = r.stdout.split("\0")
    if r.returncode != 0 or len(values) < len(GRUB_VARS):
        return {}
    return {k: v for k, v in zip(GRUB_VARS, values, strict=False) if v}


def _cmdline(dg: dict[str, str]) -> str:
    """The kernel parameters Debian's own entry gets (GRUB_CMDLINE_LINUX and _DEFAULT):
    not this boot's, which may carry a one-time `single` or `init=`."""
    words = f"{dg.get('GRUB_CMDLINE_LINUX', '')} {dg.get('GRUB_CMDLINE_LINUX_DEFAULT', '')}"
    return " ".join(w for w in words.split() if not w.startswith(("root=", "rd.ibi.")))


def _distributor() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return "Debian GNU/Linux"


def _debian_like() -> bool:
    if Path("/etc/debian_version").is_file():
        return True
    with contextlib.suppress(OSError):
        text = Path("/etc/os-release").read_text()
        return bool(re.search(r"^ID(_LIKE)?=.*\bdebian\b", text, re.M))
    return False


def make_plan(device: str, *, label: str = "ibidata", force: bool = False) -> InstallPlan:
    """Check that this machine and DEVICE can be used; change nothing."""
    if os.geteuid() != 0:
        raise Unsuitable("ibi install must run as root")
    if not _debian_like():
        raise Unsuitable("this is not a Debian-like system (no /etc/debian_version)")
    root = _mount_of("/")
    if root.fstype == "overlay" or mounts.is_mountpoint("/run/ibi/data"):
        raise Unsuitable("/ is already an ibi image stack: ibi install converts a "
                         "conventionally installed system")
    if Path("/sys/firmware/efi").is_dir():
        raise Unsuitable("this machine boots through UEFI; ibi install sets up BIOS GRUB "
                         "(grub-pc) only so far")
    if not os.path.exists(device):
        raise UsageError(f"{device} does not exist")
    device = os.path.realpath(device)
    _disk, is_part = _disk_of(device)
    busy = _devnos(device)
    for m in mounts.mountinfo():
        if m.devno in busy:
            raise Unsuitable(f"{device} is in use: mounted on {m.mountpoint}")
    with contextlib.suppress(OSError):
        swaps = Path("/proc/swaps").read_text().split()
        if any(os.path.realpath(w) == device for w in swaps if w.startswith("/dev/")):
            raise Unsuitable(f"{device} is in use as swap")
    probe = _blkid(device)
    holds = ""
    if probe.get("TYPE"):
        holds = f"a file system ({probe['TYPE']}" + (
            f", label {probe['LABEL']!r})" if probe.get("LABEL") else ")")
    elif probe.get("PTTYPE"):
        holds = f"a {probe['PTTYPE']} partition table"
    if holds and not force:
        raise Unsuitable(f"{device} holds {holds}; ibi install formats it",
                         hint="choose an empty partition, or add --force to erase it")
    try:  # the kernel's own answer: a mount, swap, device-mapper or RAID holds it
        os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
    except OSError as e:
        raise Unsuitable(f"{device} is in use ({e.strerror})") from None
    left_out = [f"{m.mountpoint} ({m.source})" for m in mounts.mountinfo()
                if m.source.startswith("/dev/") and m.devno != root.devno
                and m.mountpoint != "/" and not any(
                    m.mountpoint == d or m.mountpoint.startswith(d + "/")
                    for d in NOT_SYSTEM_MOUNTS)]
    if left_out:
        raise Unsuitable("file systems mounted under / would be missing from the base image: "
                         + ", ".join(left_out),
                         hint="ibi install squashes the root file system alone; "
                         "unmount them (or merge them into /) first")
    for what, devno in (("root file system", root.devno),
                        ("/home", _mount_of("/home").devno)):
        if _on_dm_crypt(devno):
            raise Unsuitable(f"the {what} is on an encrypted device: ibi install would copy "
                             f"it unencrypted onto {device}")

    home_bytes = tree_bytes(Path("/home")) if os.path.isdir("/home") else 0
    sv = os.statvfs("/")
    root_bytes = (sv.f_blocks - sv.f_bfree) * sv.f_frsize
    if os.path.isdir("/home") and os.stat("/home").st_dev == os.stat("/").st_dev:
        root_bytes = max(0, root_bytes - home_bytes)
    kernel = os.uname().release
    vmlinuz = Path(f"/boot/vmlinuz-{kernel}")
    kernel_bytes = vmlinuz.stat().st_size if vmlinuz.is_file() else 0
    need = (int(root_bytes * COMPRESSION_RATIO) + home_bytes + kernel_bytes
            + INITRD_ESTIMATE + LAYER_HEADROOM)
    size = _size(device)
    if size < need:
        raise NoSpace(f"{device} is too small: {human(size)}, and ibi needs about "
                      f"{human(need)} (the root's {human(root_bytes)} squashed at "
                      f"{COMPRESSION_RATIO:.2f}, /home's {human(home_bytes)}, the kernel, "
                      f"and {human(LAYER_HEADROOM)} for changes)",
                      hint="choose a larger partition")
    for tool in ("grub-install", "dracut", "mkfs.ext4", "mksquashfs", "blkid"):
        try:
            which(tool)
        except IbiError:
            raise Unsuitable(f"{tool} is missing",
                             hint="apt-get install grub-pc dracut e2fsprogs squashfs-tools") \
                from None
    if not Path("/usr/lib/grub/i386-pc").is_dir():
        raise Unsuitable("GRUB for BIOS is missing (/usr/lib/grub/i386-pc)",
                         hint="apt-get install grub-pc")
    if not vmlinuz.is_file():
        raise Unsuitable(f"the running kernel's image {vmlinuz} is missing")
    boot = _mount_of("/boot")
    boot_disk, boot_is_part = _disk_of(boot.source) if boot.source.startswith("/dev/") \
        else ("", False)
    if not boot_is_part:
        raise Unsuitable(f"/boot is on {boot.source}, not on a partition of a disk; "
                         "GRUB cannot be put in front of it")
    if boot_disk == device:
        raise Unsuitable(f"{device} holds this system's /boot")

    original = None
    if Path("/boot/grub/grub.cfg").is_file():
        # the path GRUB sees on that file system (a btrfs subvolume adds its own prefix)
        rel = run(["grub-mkrelpath", "/boot/grub/grub.cfg"], check=False).stdout.strip()
        if not rel:
            rel = "/boot/grub/grub.cfg" if boot.mountpoint == "/" else "/grub/grub.cfg"
        original = Original(root.source, _fs_uuid(boot.source), rel)
    dg = _default_grub()
    terminal = dg.get("GRUB_SERIAL_COMMAND", "serial") \
        if "serial" in dg.get("GRUB_TERMINAL", "") + dg.get("GRUB_TERMINAL_INPUT", "") else ""
    # the terminals the original menu uses (serial alone, or serial and the screen)
    terminals = " ".join(w for w in dg.get("GRUB_TERMINAL", "").split()
                         if re.fullmatch(r"[a-z_]+", w)) or "serial console"
    try:
        timeout = max(5, int(dg.get("GRUB_TIMEOUT", "5")))
    except ValueError:
        timeout = 5
    return InstallPlan(
        device=device, partition_disk=not is_part, device_size=size, holds=holds,
        label=label, root_source=root.source, root_bytes=root_bytes,
        home_bytes=home_bytes, need=need, kernel=kernel, boot_disk=boot_disk,
        original=original, target_names=tuple(sorted(_names_of(device, probe))),
        terminals=terminals,
        cmdline=_cmdline(dg), terminal=terminal, timeout=timeout,
        distributor=_distributor())


def describe(p: InstallPlan) -> list[str]:
    """The plan in words: what --dry-run prints and the confirmation shows."""
    target = (f"{p.device} ({human(p.device_size)}, "
              f"{'holding ' + p.holds if p.holds else 'empty'})")
    lines = ["ibi install will:"]
    n = 1
    if p.partition_disk:
        lines.append(f"  {n}. make one partition spanning the whole disk {target}")
        n += 1
        target = f"that partition of {p.device}"
    lines += [
        f"  {n}. format {target} as ext4, label {p.label}: everything on it is lost",
        f"  {n + 1}. build an initramfs for Linux {p.kernel} with the ibi dracut module; "
        "keep it and the kernel with the base image in the data partition's boot/kernels/",
        f"  {n + 2}. squash the root file system ({p.root_source}, {human(p.root_bytes)} "
        f"without /home) into the base image, about "
        f"{human(p.root_bytes * COMPRESSION_RATIO)}; left out: /home, a separate /boot, "
        "/proc /sys /dev /run, /tmp's content; /etc/fstab's /, /home and /boot lines are "
        "commented out in the image",
        f"  {n + 3}. copy /home ({human(p.home_bytes)}) to the data partition's home/ "
        "(owners, modes, ACLs, xattrs, hard links)",
        f"  {n + 4}. install GRUB (i386-pc) on {p.boot_disk}, its menu on the data "
        "partition: the ibi stack (default), ibi Maintenance Mode, a Live Review of each "
        "restore point" + (f", and the original system on {p.original.device}"
                           if p.original else ""),
        f"Kernel parameters kept: {p.cmdline or '(none)'}",
        f"Space: about {human(p.need)} needed, {human(p.device_size)} available.",
        f"Untouched: {p.root_source} (the original root) stays as it is"
        + (" and bootable from the boot menu." if p.original else "."),
        f"To make the original system the default again: boot it, then run "
        f"grub-install {p.boot_disk} && update-grub",
    ]
    return lines
