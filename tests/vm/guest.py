"""What the VM tests start from: the Debian guest and the project's package.

Expensive pieces are cached outside the clone, under ``$IBI_VM_CACHE`` (default
``/var/cache/ibi-vm``), each keyed by a hash of exactly its inputs:

- ``rootfs-<recipe>.tar``: the Debian guest (mmdebstrap), keyed by ``recipe.py``;
- ``debs/``: the .deb cache that makes a rebuild of the rootfs quick (and holds the second
  kernel flavour the kernel tests install in the guest);
- ``ibi-<key>.deb``: the project's package (scripts/build-deb), keyed by its sources.

From them tests/vm/disk.py makes a conventional Debian disk (GRUB, ext4 root) and
tests/vm/installed.py installs the package there with dpkg and runs ``ibi install``: every
VM test boots that disk through GRUB, as a user's machine does.

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
from collections.abc import Iterable, Iterator
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


# --- what the VM tests start from --------------------------------------------------------

@dataclass(frozen=True)
class Guest:
    rootfs: Path  # the Debian guest, from which tests/vm/disk.py makes a conventional disk
    deb: Path  # the project's package, which tests/vm/installed.py installs there with dpkg
    timings: dict[str, float]


def build_guest(workdir: Path) -> Guest:
    """Make (or take from the cache) the guest rootfs and the project's package."""
    t0 = time.monotonic()
    tar, spent = ensure_rootfs()
    deb = ensure_deb()
    c = cache_dir()
    # kernels, initramfs and base images of the -kernel boots the tests no longer make
    for pat in ("vmlinuz-*", "initrd-*.img", "base-*.sqfs"):
        for old in c.glob(pat):
            old.unlink()
    timings = {"rootfs_build_s": round(spent, 1), "total_s": round(time.monotonic() - t0, 1)}
    log(f"guest ready: {timings}")
    return Guest(tar, deb, timings)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ibi-vm-guest")
    out.mkdir(parents=True, exist_ok=True)
    g = build_guest(out)
    print(json.dumps({k: str(v) for k, v in g.__dict__.items()}, indent=1))
