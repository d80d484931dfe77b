"""Build what a VM test boots: kernel, ibi initramfs, base.sqfs and a data disk.

Expensive pieces are cached outside the clone, under ``$IBI_VM_CACHE`` (default
``/var/cache/ibi-vm``), each keyed by a hash of exactly its inputs:

- ``rootfs-<recipe>.tar``: the Debian guest (mmdebstrap), keyed by ``recipe.py``;
- ``debs/``: the .deb cache that makes a rebuild of the rootfs quick;
- ``initrd-<key>.img`` + ``vmlinuz-<key>``: dracut run in the guest tree, keyed by the rootfs,
  ``dracut-module/``, ``systemd/`` and the configuration code in this file;
- ``base-<key>.sqfs``: the configured guest tree with the project installed, keyed by all of
  the above plus ``maintenance/`` and ``screens/``.

Per run only the data disk is made (``ibi init`` into a staging directory, then
``mkfs.ext4 -d``: no loop mount), and each scenario boots a qcow2 overlay of it.

Run ``python3 -m tests.vm.guest OUTDIR`` (as root) to build by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe

PROJECT = Path(__file__).resolve().parents[2]
DATA_LABEL = "ibidata"
DATA_DISK_SIZE = "4G"
GUEST_HOSTNAME = "ibi-guest"
PROMPT = "ibi-guest# "
# Only what the boot needs, so the initramfs stays small and unpacks fast under TCG.
INITRD_DRIVERS = "virtio_pci virtio_blk virtio_console ext4 squashfs overlay loop"


def cache_dir() -> Path:
    return Path(os.environ.get("IBI_VM_CACHE", "/var/cache/ibi-vm"))


def log(msg: str) -> None:
    print(f"[vm-guest] {msg}", file=sys.stderr, flush=True)


def missing_tools() -> list[str]:
    """Host tools the VM tests need; empty when all are present."""
    need = ["mmdebstrap", "qemu-system-x86_64", "qemu-img", "mksquashfs", "mkfs.ext4",
            "unshare", "chroot", "tar"]
    return [t for t in need if shutil.which(t) is None]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so concurrent runs do not build the same cache entry twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def hash_paths(paths: Iterable[Path], extra: str = "") -> str:
    """A short hash of file names and contents under ``paths`` (sorted, caches skipped)."""
    h = hashlib.sha256(extra.encode())
    for root in paths:
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for p in files:
            h.update(str(p.relative_to(PROJECT)).encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def sh(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    r: subprocess.CompletedProcess[str] = subprocess.run(
        cmd, check=True, stdin=subprocess.DEVNULL, text=True, **kw)  # type: ignore[call-overload]
    return r


# --- the cached rootfs -----------------------------------------------------------------

def ensure_rootfs() -> tuple[Path, float]:
    """The rootfs tarball (built if missing); returns it and the seconds spent building."""
    c = cache_dir()
    tar = c / f"rootfs-{recipe.recipe_key()}.tar"
    with locked(c / "rootfs.lock"):
        if tar.is_file():
            return tar, 0.0
        log(f"building the guest rootfs with mmdebstrap ({recipe.SUITE}) -> {tar}")
        t = time.monotonic()
        recipe.build_rootfs(tar, c / "debs", c / "rootfs-build.log")
        spent = time.monotonic() - t
        log(f"rootfs built in {spent:.0f} s")
        (c / "timings.json").write_text(json.dumps({"rootfs_build_s": round(spent, 1)}))
        for old in c.glob("rootfs-*.tar"):
            if old != tar:
                old.unlink()
        return tar, spent


# --- per-run configuration of the guest tree --------------------------------------------

AUTOLOGIN = """[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
"""

BASHRC = f"""# ibi VM test guest: a plain prompt the harness can match
PS1='{PROMPT}'
bind 'set enable-bracketed-paste off' 2>/dev/null
stty rows 24 cols 80 2>/dev/null
export SYSTEMD_PAGER= PAGER=cat SYSTEMD_COLORS=0
"""

IBI_WRAPPER = """#!/bin/sh
# ibi: the engine's command line (the project is installed as plain modules)
exec python3 -m maintenance.cli "$@"
"""


def install_project(tree: Path) -> None:
    """Put the engine, the menu, the dracut module and the units into the guest tree."""
    site = tree / "usr/lib/python3/dist-packages"
    for pkg in ("maintenance", "screens"):
        src = PROJECT / pkg
        dst = site / pkg
        if dst.exists():
            shutil.rmtree(dst)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wrapper = tree / "usr/sbin/ibi"
    wrapper.write_text(IBI_WRAPPER)
    wrapper.chmod(0o755)

    mod = tree / "usr/lib/dracut/modules.d/90ibi"
    if mod.exists():
        shutil.rmtree(mod)
    shutil.copytree(PROJECT / "dracut-module/90ibi", mod)
    for f in mod.iterdir():
        f.chmod(0o755 if f.suffix == ".sh" else 0o644)

    unitdir = tree / "usr/lib/systemd/system"
    sysd = PROJECT / "systemd"
    for f in sorted(sysd.iterdir()) if sysd.is_dir() else []:
        if f.suffix in (".service", ".target", ".path", ".timer"):
            shutil.copy2(f, unitdir / f.name)
    grub = sysd / "42_ibi"
    if grub.is_file():
        (tree / "etc/grub.d").mkdir(parents=True, exist_ok=True)
        shutil.copy2(grub, tree / "etc/grub.d/42_ibi")
    libexec = tree / "usr/lib/ibi"
    libexec.mkdir(parents=True, exist_ok=True)
    for f in sorted(sysd.glob("ibi-*.sh")) if sysd.is_dir() else []:
        dst = libexec / f.name.removesuffix(".sh")
        shutil.copy2(f, dst)
        dst.chmod(0o755)


def configure(tree: Path) -> None:
    """Guest settings for tests: hostname, root autologin on ttyS0, a plain prompt."""
    (tree / "etc/hostname").write_text(GUEST_HOSTNAME + "\n")
    (tree / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {GUEST_HOSTNAME}\n")
    (tree / "etc/fstab").write_text("# ibi: / is assembled by the initramfs\n")
    dropin = tree / "etc/systemd/system/serial-getty@ttyS0.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "autologin.conf").write_text(AUTOLOGIN)
    (tree / "root/.bashrc").write_text(BASHRC)
    (tree / "root/.profile").write_text(". /root/.bashrc\n")
    inputrc = tree / "etc/inputrc"
    text = inputrc.read_text() if inputrc.exists() else ""
    if "enable-bracketed-paste" not in text:
        inputrc.write_text(text + "\nset enable-bracketed-paste off\n")
    # root without a password (the console is autologged in anyway)
    shadow = tree / "etc/shadow"
    lines = shadow.read_text().splitlines()
    shadow.write_text("".join(
        ("root::" + ln.split(":", 2)[2] if ln.startswith("root:") else ln) + "\n"
        for ln in lines))
    # enable the units the project ships for the booted system
    wants = tree / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("ibi-protect.service",):
        if (tree / "usr/lib/systemd/system" / unit).is_file():
            link = wants / unit
            if not link.is_symlink():
                link.symlink_to(f"/usr/lib/systemd/system/{unit}")
    # no firstboot questions, no waiting for a network
    for unit in ("systemd-firstboot.service", "systemd-networkd-wait-online.service"):
        mask = tree / "etc/systemd/system" / unit
        if not mask.is_symlink():
            mask.symlink_to("/dev/null")
    (tree / "etc/machine-id").write_text("")


def kernel_version(tree: Path) -> str:
    kvers = sorted(p.name for p in (tree / "lib/modules").iterdir())
    if not kvers:
        raise RuntimeError("no kernel in the guest tree")
    return kvers[-1]


def run_dracut(tree: Path, out: Path, log_file: Path) -> None:
    """Build the initramfs inside the guest tree (chroot, private mount namespace)."""
    kver = kernel_version(tree)
    script = f"""set -e
T={tree}
mount --rbind /dev "$T/dev"
mount -t proc proc "$T/proc"
mount --rbind /sys "$T/sys"
mount -t tmpfs tmpfs "$T/tmp"
chroot "$T" dracut --force --no-hostonly --no-hostonly-cmdline \\
    --drivers "{INITRD_DRIVERS}" --add ibi --compress zstd \\
    /tmp/initrd.img {kver}
cp "$T/tmp/initrd.img" "{out}.part"
"""
    with log_file.open("w") as fh:
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       check=True, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    os.replace(f"{out}.part", out)


# --- everything a test boots -------------------------------------------------------------

@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path
    base_sqfs: Path
    data_disk: Path  # raw ext4 image (label ibidata) holding the store; boot overlays of it
    timings: dict[str, float]

    def make_disk(self, path: Path,
                  setup: Callable[[Path], None] | None = None) -> Path:
        """A fresh data disk at ``path`` whose store holds base.sqfs; ``setup(D)`` may add
        files to the data directory D (e.g. into layer/upper or home) before mkfs."""
        return make_data_disk(self.base_sqfs, path, setup)

    def plain_disk(self, path: Path) -> Path:
        """The same guest as a plain ext4 root (no ibi): the baseline boot to compare with."""
        return make_plain_disk(path)

    def overlay_disk(self, path: Path) -> Path:
        """A qcow2 copy-on-write overlay of the data disk (one per scenario)."""
        sh(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.data_disk),
            str(path)])
        return path


def project_keys(rootfs_tar: Path) -> tuple[str, str]:
    """(initrd key, base image key)."""
    me = Path(__file__)
    initrd_key = hash_paths([PROJECT / "dracut-module", PROJECT / "systemd", me],
                            rootfs_tar.name + INITRD_DRIVERS)
    base_key = hash_paths([PROJECT / "maintenance", PROJECT / "screens"], initrd_key)
    return initrd_key, base_key


def build_guest(workdir: Path) -> Guest:
    """Make (or take from the cache) the kernel, initramfs and base image; make a data disk."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    tar, spent = ensure_rootfs()
    timings["rootfs_build_s"] = round(spent, 1)
    c = cache_dir()
    initrd_key, base_key = project_keys(tar)
    kernel = c / f"vmlinuz-{initrd_key}"
    initrd = c / f"initrd-{initrd_key}.img"
    base = c / f"base-{base_key}.sqfs"
    with locked(c / "guest.lock"):
        if not (kernel.is_file() and initrd.is_file() and base.is_file()):
            tree = workdir / "tree"
            if tree.exists():
                shutil.rmtree(tree)
            tree.mkdir(parents=True)
            t = time.monotonic()
            sh(["tar", "-xpf", str(tar), "--numeric-owner", "--xattrs",
                "--xattrs-include=*", "-C", str(tree)])
            install_project(tree)
            configure(tree)
            timings["tree_s"] = round(time.monotonic() - t, 1)
            if not (initrd.is_file() and kernel.is_file()):
                t = time.monotonic()
                log("building the initramfs with dracut in the guest tree")
                run_dracut(tree, initrd, workdir / "dracut.log")
                shutil.copy2(tree / "boot" / f"vmlinuz-{kernel_version(tree)}", kernel)
                timings["dracut_s"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            log("squashing the guest tree into base.sqfs")
            part = base.with_name(base.name + ".part")
            sh(["mksquashfs", str(tree), str(part), "-noappend", "-quiet", "-no-progress",
                "-comp", "zstd", "-Xcompression-level", "3", "-e", "boot/initrd.img"],
               stdout=subprocess.DEVNULL)
            os.replace(part, base)
            timings["mksquashfs_s"] = round(time.monotonic() - t, 1)
            shutil.rmtree(tree)
            prune(c, keep={kernel.name, initrd.name, base.name})
    t = time.monotonic()
    disk = make_data_disk(base, workdir / "data.raw")
    timings["data_disk_s"] = round(time.monotonic() - t, 1)
    timings["total_s"] = round(time.monotonic() - t0, 1)
    log(f"guest ready: {timings}")
    return Guest(kernel, initrd, base, disk, timings)


def make_plain_disk(disk: Path) -> Path:
    """An ext4 image of the configured guest tree (boot it with root=/dev/vda)."""
    tar, _ = ensure_rootfs()
    tree = disk.with_name(disk.name + ".tree")
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    sh(["tar", "-xpf", str(tar), "--numeric-owner", "--xattrs", "--xattrs-include=*",
        "-C", str(tree)])
    install_project(tree)
    configure(tree)
    with contextlib.suppress(FileNotFoundError):
        disk.unlink()
    sh(["mkfs.ext4", "-q", "-F", "-L", "plainroot", "-E", "root_owner=0:0", "-d", str(tree),
        str(disk), "3G"])
    shutil.rmtree(tree)
    return disk


def prune(c: Path, keep: set[str]) -> None:
    """Drop older kernels, initramfs and base images (a few hundred MB each)."""
    for pat in ("vmlinuz-*", "initrd-*.img", "base-*.sqfs"):
        for p in c.glob(pat):
            if p.name not in keep:
                p.unlink()


def make_data_disk(base: Path, disk: Path,
                   setup: Callable[[Path], None] | None = None) -> Path:
    """An ext4 image labelled ibidata holding a store whose stack is just ``base``."""
    staging = disk.with_name(disk.name + ".d")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    sh([sys.executable, "-m", "maintenance.cli", "init", "--data", str(staging),
        "--image", str(base), "-m", "VM test base"], env=env, stdout=subprocess.DEVNULL)
    if setup is not None:
        setup(staging)
    with contextlib.suppress(FileNotFoundError):
        disk.unlink()
    sh(["mkfs.ext4", "-q", "-F", "-L", DATA_LABEL, "-E", "root_owner=0:0", "-d", str(staging),
        str(disk), DATA_DISK_SIZE])
    shutil.rmtree(staging)
    return disk


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ibi-vm-guest")
    out.mkdir(parents=True, exist_ok=True)
    g = build_guest(out)
    print(json.dumps({k: str(v) for k, v in g.__dict__.items()}, indent=1))
