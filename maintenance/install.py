"""``ibi install``: turn a running, conventionally installed Debian system into an ibi one.

:func:`make_plan` checks everything and changes nothing (``--dry-run`` prints it);
:func:`install` carries it out:

1. partition DEVICE if it is a whole disk, then ``mkfs.ext4 -L ibidata`` it;
2. build an initramfs for the running kernel with dracut and the ibi module;
3. squash the root file system alone (a non-recursive bind of ``/``: no /home, no separate
   /boot, nothing of /proc /sys /dev /run, no /tmp content) into the base image, through a
   read-only overlay whose only change is /etc/fstab (``/``, ``/home`` and ``/boot`` lines
   commented out: the initramfs assembles the root);
   the base image keeps that kernel and initramfs in DATA/boot/kernels/ (maintenance.kernels);
4. copy /home into DATA/home (``cp -a``: owners, modes, ACLs, xattrs, hard links);
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
from .engine import Engine
from .errors import CommandError, IbiError, NoSpace, Unsuitable, UsageError
from .model import Progress, ProgressFn
from .run import run, which
from .status import human
from .store import BOOT, fsync_dir, tree_bytes

# Measured: the Debian 13 guest of tests/vm/test_install.py (linux-image, dracut, grub,
# python3: 412.4 MiB used on its root) squashed to a 208.3 MiB base with zstd level 3, a
# ratio of 0.505. Rounded up, as roots with more binaries or media compress worse.
COMPRESSION_RATIO = 0.55
LAYER_HEADROOM = 512 << 20  # room for the writable layer's first changes
INITRD_ESTIMATE = 128 << 20
WORK = "install"
FSTAB_NOT_UNDER_IBI = ("/", "/home", "/boot")
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


def _on_dm_crypt(devno: str) -> bool:
    """Whether the block device ``devno`` (major:minor) sits on dm-crypt at any depth."""
    todo = [Path(f"/sys/dev/block/{devno}")]
    seen: set[Path] = set()
    while todo:
        d = todo.pop()
        with contextlib.suppress(OSError):
            d = d.resolve()
            if d in seen:
                continue
            seen.add(d)
            uuid = d / "dm" / "uuid"
            if uuid.is_file() and uuid.read_text().startswith("CRYPT-"):
                return True
            if (d / "partition").exists():
                todo.append(d.parent)
            if (d / "slaves").is_dir():
                todo.extend((d / "slaves").iterdir())
    return False


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


def _fstab_for_ibi(text: str, target_names: set[str]) -> tuple[str, list[str]]:
    """The image's /etc/fstab: the lines of /, /home and /boot, of the data partition's old
    identity (``target_names``: its UUID=…, LABEL=…, device paths) and of swap files on the
    root file system turned into comments. Returns it and the swap files (left out of the
    base: they would bake swapped-out memory into an image, and cannot be swapped on from
    an overlay)."""
    out = ["# ibi install: / is assembled from the image stack by the initramfs, /home is the",
           "# data partition's home/ and /boot comes with the images: their lines are off."]
    swapfiles = []
    off = {m.rstrip("/") or "/" for m in FSTAB_NOT_UNDER_IBI}
    for line in text.splitlines():
        fields = line.split()
        live = len(fields) >= 3 and not fields[0].startswith("#")
        swapfile = live and fields[2] == "swap" and fields[0].startswith("/") \
            and not fields[0].startswith("/dev/")
        if swapfile:
            swapfiles.append(fields[0])
        if live and ((fields[1].rstrip("/") or "/") in off or fields[0] in target_names
                     or swapfile):
            out.append("#ibi# " + line)
        else:
            out.append(line)
    return "\n".join(out) + "\n", swapfiles


def _names_of(dev: str, probe: dict[str, str]) -> set[str]:
    """How an fstab line may name ``dev``: its path, symlinks to it, its old identity."""
    names = {dev}
    for key, tag in (("UUID", "UUID"), ("LABEL", "LABEL"), ("PART_ENTRY_UUID", "PARTUUID"),
                     ("PART_ENTRY_NAME", "PARTLABEL")):
        if probe.get(key):
            names.add(f"{tag}={probe[key]}")
    names.update(_device_links(dev))
    return names


def _device_links(dev: str) -> set[str]:
    """The /dev/disk/by-* links udev made for ``dev`` (from its database, via pyudev)."""
    import pyudev  # only ibi install asks udev

    try:
        device = pyudev.Devices.from_device_file(pyudev.Context(), dev)
    except (pyudev.DeviceNotFoundError, OSError, ValueError):
        return set()  # not a device udev knows (no udev here, a plain file)
    return {str(link) for link in device.device_links}


def _mirror_dirs(src: Path, upper: Path) -> None:
    """Create ``upper``/``src`` (and ``upper`` itself) as directories with the owners, modes
    and times of ``/``, and each component of ``src``: overlayfs shows the upper's
    attributes for a merged directory, so they must not come from this process's umask."""
    parts = [Path("/"), *reversed(src.parents[:-1]), src] if src != Path("/") else [Path("/")]
    for comp in parts:
        (upper / str(comp).lstrip("/")).mkdir(exist_ok=True)
    for comp in reversed(parts):  # children first: making them would touch the parent's times
        dst = upper / str(comp).lstrip("/")
        st = os.stat(comp)
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


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
        upper = work / "rw/upper"
        (work / "rw/work").mkdir()
        _mirror_dirs(Path("/etc"), upper)
        fstab = Path("/etc/fstab")
        text, swapfiles = _fstab_for_ibi(fstab.read_text() if fstab.exists() else "",
                                         set(p.target_names))
        (upper / "etc/fstab").write_text(text)
        os.chmod(upper / "etc/fstab", 0o644)
        # no grub.cfg in the image: Debian's kernel hook then leaves update-grub alone,
        # which cannot probe an overlay root; ibi's own hook renews ibi's menu instead
        if Path("/boot/grub/grub.cfg").is_file() and _mount_of("/boot").mountpoint == "/":
            _mirror_dirs(Path("/boot/grub"), upper)
            os.mknod(upper / "boot/grub/grub.cfg", stat.S_IFCHR | 0o000, os.makedev(0, 0))
        view = work / "view"
        view.mkdir(exist_ok=True)
        m.overlay(view, [rootbind], work / "rw/upper", work / "rw/work")
        # the base boots the running kernel with an initramfs that has the ibi module (the
        # one in /boot may predate the package); kept with the base in DATA/boot/kernels/
        _step(progress, "initramfs", f"dracut for Linux {p.kernel} with the ibi module")
        (data / BOOT).mkdir(exist_ok=True)
        initrd = data / BOOT / f".tmp-initrd.img-{p.kernel}"
        run([which("dracut"), "--force", "--quiet", "--add", "ibi", "--no-hostonly-cmdline",
             str(initrd), p.kernel])
        _step(progress, "squashing", f"the root file system {p.root_source}")
        eng.init(source_dir=view, description=f"installed from {p.root_source}",
                 excludes=("tmp/*", "lost+found", *(f.lstrip("/") for f in swapfiles)),
                 progress=progress,
                 space_needed=int(p.root_bytes * COMPRESSION_RATIO),
                 kernel_files={p.kernel: (Path(f"/boot/vmlinuz-{p.kernel}"), initrd)})
        initrd.unlink()
        _step(progress, "copying", f"/home ({human(p.home_bytes)})")
        store = eng.store
        staging = data / ".home-install"
        staging.mkdir(mode=0o755)
        if os.path.isdir("/home"):
            # -x: what other file systems mount under /home is not /home's (fstab keeps it)
            run(["cp", "-a", "-x", "--preserve=all", "/home/.", str(staging)])
            st = os.stat("/home")
            os.chown(staging, st.st_uid, st.st_gid)
            os.chmod(staging, stat.S_IMODE(st.st_mode))
        store.home.rmdir()  # made empty by init
        os.replace(staging, store.home)
        fsync_dir(data)
        data_spec = f"UUID={uuid}"
        write_settings(store, Settings(
            data_spec=data_spec, data_fs_uuid=uuid, kernel=p.kernel, cmdline=p.cmdline,
            distributor=p.distributor, timeout=p.timeout, terminal=p.terminal,
            terminals=p.terminals,
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
