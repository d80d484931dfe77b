"""``ibi install``: turn a running, conventionally installed Debian system into an ibi one.

:func:`maintenance.installplan.make_plan` checks everything and changes nothing
(``--dry-run`` prints it); :func:`install` carries it out:

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
import stat
from pathlib import Path

from . import mounts
from .blockdev import _fs_uuid, _mount_of, _sys_block
from .bootloader import Settings, write_settings
from .engine import Engine
from .errors import CommandError, IbiError
from .fsio import fsync_dir
from .installplan import COMPRESSION_RATIO, InstallPlan
from .model import Progress, ProgressFn
from .run import run, which
from .status import human
from .store import BOOT

WORK = "install"
FSTAB_NOT_UNDER_IBI = ("/", "/home", "/boot")


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
