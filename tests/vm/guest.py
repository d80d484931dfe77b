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

PACKAGE_SOURCES = ("maintenance", "screens", "dracut-module", "systemd", "debian", "docs",
                   "pyproject.toml", "README.md", "scripts/build-deb")


def ensure_deb() -> Path:
    """The project's Debian package, built by scripts/build-deb (cached by its sources)."""
    c = cache_dir()
    key = hash_paths([PROJECT / p for p in PACKAGE_SOURCES])
    deb = c / f"ibi-{key}.deb"
    with locked(c / "deb.lock"):
        if deb.is_file():
            return deb
        out = c / f"deb-build-{os.getpid()}"
        log("building the ibi package with scripts/build-deb")
        t = time.monotonic()
        with (c / "deb-build.log").open("w") as fh:
            r = subprocess.run([str(PROJECT / "scripts/build-deb"), str(out)], text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fh)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/build-deb failed (log: {c / 'deb-build.log'})")
        built = Path(r.stdout.strip().splitlines()[-1])
        shutil.move(built, deb)
        shutil.rmtree(out, ignore_errors=True)
        for old in c.glob("ibi-*.deb"):
            if old != deb:
                old.unlink()
        log(f"package built in {time.monotonic() - t:.0f} s: {deb}")
        return deb


def install_project(tree: Path, deb: Path) -> None:
    """Install the project into the guest tree the way a user does: its .deb, with dpkg
    (its dependencies are in the guest already; the guest has no network)."""
    shutil.copy2(deb, tree / "tmp/ibi.deb")
    script = f"""set -e
T={tree}
mount -t proc proc "$T/proc"
chroot "$T" env DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/ibi.deb
"""
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    (tree / "tmp/ibi.deb").unlink()
    if r.returncode != 0:
        raise RuntimeError(f"dpkg -i of the ibi package failed:\n{r.stdout}\n{r.stderr}")


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


def project_keys(rootfs_tar: Path, deb: Path) -> tuple[str, str]:
    """(initrd key, base image key): both follow the package and this file."""
    key = hash_paths([Path(__file__)], rootfs_tar.name + deb.name + INITRD_DRIVERS)
    return key, key


def build_guest(workdir: Path) -> Guest:
    """Make (or take from the cache) the kernel, initramfs and base image; make a data disk."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    tar, spent = ensure_rootfs()
    timings["rootfs_build_s"] = round(spent, 1)
    c = cache_dir()
    deb = ensure_deb()
    initrd_key, base_key = project_keys(tar, deb)
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
            install_project(tree, deb)
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
    install_project(tree, ensure_deb())
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
