"""``ibi install``: turn a running, conventionally installed Debian system into an ibi one.

:func:`make_plan` checks everything and changes nothing (``--dry-run`` prints it);
:func:`install` carries it out:

1. partition DEVICE if it is a whole disk, then ``mkfs.ext4 -L ibidata`` it;
2. squash the root file system alone (a non-recursive bind of ``/``: no /home, no separate
   /boot, nothing of /proc /sys /dev /run, no /tmp content) into the base image, through a
   read-only overlay whose only change is /etc/fstab (``/``, ``/home`` and ``/boot`` lines
   commented out: the initramfs assembles the root);
3. copy /home into DATA/home (``cp -a``: owners, modes, ACLs, xattrs, hard links);
4. the running kernel and an initramfs built by dracut with the ibi module into DATA/boot;
5. GRUB's menu into DATA/boot/grub (written by ibi from the boot plan), then
   ``grub-install --boot-directory=DATA/boot`` onto the boot disk: that last step makes the
   ibi stack the default. The original root file system is never written; its own GRUB menu
   stays reachable as the "Original system" entry.

Until the last step nothing about the boot has changed, so an interrupted install leaves
the machine as it was (run it again with --force to reuse the data partition).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from . import mounts
from .bootloader import Original, Settings, write_settings
from .engine import Engine, human
from .errors import CommandError, IbiError, NoSpace, Unsuitable, UsageError
from .model import Progress, ProgressFn
from .run import run, which
from .store import fsync_dir, tree_bytes

# Measured: the Debian 13 test guest's root (linux-image, dracut, grub, python3; 1.03 GiB
# in 38,000 files) squashes to 0.45 of its size with zstd level 3 (tests/vm). Kept a little
# pessimistic, as roots with more text compress better and with more media worse.
COMPRESSION_RATIO = 0.50
LAYER_HEADROOM = 512 << 20  # room for the writable layer's first changes
INITRD_ESTIMATE = 128 << 20
WORK = "install"
FSTAB_NOT_UNDER_IBI = ("/", "/home", "/boot")


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
    cmdline: str
    terminal: str
    timeout: int
    distributor: str


# ---------------------------------------------------------------------- probing

def _sys_block(dev: str) -> Path:
    st = os.stat(dev)
    if not stat.S_ISBLK(st.st_mode):
        raise UsageError(f"{dev} is not a block device")
    return Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}").resolve()


def _disk_of(dev: str) -> tuple[str, bool]:
    """(the whole disk holding ``dev``, whether ``dev`` is a partition)."""
    sysdir = _sys_block(dev)
    if (sysdir / "partition").exists():
        return f"/dev/{sysdir.parent.name}", True
    return f"/dev/{sysdir.name}", False


def _size(dev: str) -> int:
    return int((_sys_block(dev) / "size").read_text()) * 512


def _devnos(dev: str) -> set[str]:
    """major:minor of ``dev`` and of its partitions."""
    sysdir = _sys_block(dev)
    out = {(sysdir / "dev").read_text().strip()}
    for child in sysdir.iterdir():
        if (child / "partition").exists():
            out.add((child / "dev").read_text().strip())
    return out


def _blkid(dev: str) -> dict[str, str]:
    r = run([which("blkid"), "-p", "-o", "export", dev], check=False)
    if r.returncode not in (0, 2):  # 2: nothing found
        raise IbiError(f"cannot probe {dev}: {r.stderr.strip()}")
    return dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)


def _mount_of(path: str) -> mounts.MountInfo:
    """The mount holding ``path`` (the longest mount point above it)."""
    real = os.path.realpath(path)
    best = None
    for m in mounts.mountinfo():
        mp = m.mountpoint
        if (mp == "/" or real == mp or real.startswith(mp + "/")) \
                and (best is None or len(mp) >= len(best.mountpoint)):
            best = m
    if best is None:
        raise IbiError(f"cannot find the mount holding {path}")
    return best


def _fs_uuid(dev: str) -> str:
    r = run([which("blkid"), "-s", "UUID", "-o", "value", dev], check=False)
    uuid = r.stdout.strip()
    if not uuid:
        raise IbiError(f"{dev} has no file system UUID")
    return uuid


def _default_grub() -> dict[str, str]:
    """The plain assignments of /etc/default/grub (quotes removed)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/default/grub").read_text().splitlines():
            m = re.match(r'\s*(GRUB_[A-Z_]+)=(["\']?)(.*)\2\s*$', line)
            if m:
                out[m.group(1)] = m.group(3)
    return out


def _cmdline() -> str:
    """This boot's kernel parameters that an ibi boot keeps (console and the like)."""
    drop = ("BOOT_IMAGE=", "root=", "initrd=", "rd.ibi.", "rootflags=", "rootfstype=")
    words = Path("/proc/cmdline").read_text().split()
    return " ".join(w for w in words if w not in ("ro", "rw") and not w.startswith(drop))


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

    grub_cfg = "/boot/grub/grub.cfg" if boot.mountpoint == "/" else "/grub/grub.cfg"
    original = None
    if Path("/boot/grub/grub.cfg").is_file():
        original = Original(root.source, _fs_uuid(boot.source), grub_cfg)
    dg = _default_grub()
    terminal = dg.get("GRUB_SERIAL_COMMAND", "serial") \
        if "serial" in dg.get("GRUB_TERMINAL", "") + dg.get("GRUB_TERMINAL_INPUT", "") else ""
    try:
        timeout = max(5, int(dg.get("GRUB_TIMEOUT", "5")))
    except ValueError:
        timeout = 5
    return InstallPlan(
        device=device, partition_disk=not is_part, device_size=size, holds=holds,
        label=label, root_source=root.source, root_bytes=root_bytes,
        home_bytes=home_bytes, need=need, kernel=kernel, boot_disk=boot_disk,
        original=original, cmdline=_cmdline(), terminal=terminal, timeout=timeout,
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
        f"  {n + 1}. squash the root file system ({p.root_source}, {human(p.root_bytes)} "
        f"without /home) into the base image, about "
        f"{human(p.root_bytes * COMPRESSION_RATIO)}; left out: /home, a separate /boot, "
        "/proc /sys /dev /run, /tmp's content; /etc/fstab's /, /home and /boot lines are "
        "commented out in the image",
        f"  {n + 2}. copy /home ({human(p.home_bytes)}) to the data partition's home/ "
        "(owners, modes, ACLs, xattrs, hard links)",
        f"  {n + 3}. build an initramfs for Linux {p.kernel} with the ibi dracut module; "
        "keep it and the kernel in the data partition's boot/",
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


# ---------------------------------------------------------------------- doing it

def _step(progress: ProgressFn | None, phase: str, message: str) -> None:
    if progress:
        progress(Progress(phase, 0, 0, message))


def _partition(disk: str) -> str:
    """One Linux partition spanning ``disk`` (msdos label); returns its device."""
    run([which("sfdisk"), "--quiet", "--wipe", "always", disk], stdin_text="label: dos\n,,L\n")
    with contextlib.suppress(CommandError):
        run(["udevadm", "settle", "--timeout=30"])
    sysdir = _sys_block(disk)
    for child in sorted(sysdir.iterdir()):
        if (child / "partition").exists():
            return f"/dev/{child.name}"
    raise IbiError(f"the new partition of {disk} did not appear")


def _fstab_for_ibi(text: str) -> str:
    out = ["# ibi install: / is assembled from the image stack by the initramfs, /home is the",
           "# data partition's home/ and /boot comes with the images: their lines are off."]
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 2 \
                and fields[1].rstrip("/") in {m.rstrip("/") for m in FSTAB_NOT_UNDER_IBI}:
            out.append("#ibi# " + line)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def install(p: InstallPlan, *, run_dir: Path, progress: ProgressFn | None = None) -> Engine:
    """Carry out ``p``. Returns the engine of the new store (its data partition unmounted)."""
    work = run_dir / WORK
    device = p.device
    if p.partition_disk:
        _step(progress, "partitioning", device)
        device = _partition(device)
    _step(progress, "formatting", f"{device} as ext4 ({p.label})")
    run([which("mkfs.ext4"), "-q", "-F", "-L", p.label, device])
    uuid = _fs_uuid(device)
    data = work / "data"
    with mounts.temporary_mounts() as m:
        m.device(device, data, "rw,noatime")
        eng = Engine(data, run_dir)
        # the root file system alone, with the fstab an ibi boot needs
        rootbind = work / "lower" / "root"
        rootbind.mkdir(parents=True, exist_ok=True)
        m.bind(Path("/"), rootbind, readonly=True)
        m.tmpfs(work / "rw")
        (work / "rw/upper/etc").mkdir(parents=True)
        (work / "rw/work").mkdir()
        fstab = Path("/etc/fstab")
        (work / "rw/upper/etc/fstab").write_text(
            _fstab_for_ibi(fstab.read_text() if fstab.exists() else ""))
        os.chmod(work / "rw/upper/etc/fstab", 0o644)
        view = work / "view"
        view.mkdir(exist_ok=True)
        m.overlay(view, [rootbind], work / "rw/upper", work / "rw/work")
        _step(progress, "squashing", f"the root file system {p.root_source}")
        eng.init(source_dir=view, description=f"installed from {p.root_source}",
                 excludes=("tmp/*", "lost+found"), progress=progress,
                 space_needed=int(p.root_bytes * COMPRESSION_RATIO))
        _step(progress, "copying", f"/home ({human(p.home_bytes)})")
        store = eng.store
        staging = data / ".home-install"
        staging.mkdir(mode=0o755)
        if os.path.isdir("/home"):
            run(["cp", "-a", "--preserve=all", "/home/.", str(staging)])
            st = os.stat("/home")
            os.chown(staging, st.st_uid, st.st_gid)
            os.chmod(staging, stat.S_IMODE(st.st_mode))
        store.home.rmdir()  # made empty by init
        os.replace(staging, store.home)
        fsync_dir(data)
        _step(progress, "initramfs", f"dracut for Linux {p.kernel} with the ibi module")
        store.boot.mkdir(exist_ok=True)
        run(["cp", "--preserve=mode,timestamps", f"/boot/vmlinuz-{p.kernel}",
             str(store.boot / f"vmlinuz-{p.kernel}")])
        run([which("dracut"), "--force", "--quiet", "--add", "ibi", "--no-hostonly-cmdline",
             str(store.boot / f"initrd.img-{p.kernel}"), p.kernel])
        data_spec = f"UUID={uuid}"
        write_settings(store, Settings(
            data_spec=data_spec, data_fs_uuid=uuid, kernel=p.kernel, cmdline=p.cmdline,
            distributor=p.distributor, timeout=p.timeout, terminal=p.terminal,
            original=p.original))
        eng.refresh_boot_files()  # GRUB's menu is there before GRUB points at it
        os.sync()
        _step(progress, "bootloader", f"grub-install on {p.boot_disk}")
        run([which("grub-install"), "--target=i386-pc", f"--boot-directory={store.boot}",
             p.boot_disk])
        env = store.boot / "grub" / "grubenv"
        if not env.exists():
            run([which("grub-editenv"), str(env), "create"])
        os.sync()
    return eng
