"""The guest root file system recipe: the only input of the cached rootfs tarball.

The cache key is the hash of this whole file, so any change here (suite, mirror, package list,
the mmdebstrap command line) rebuilds the tarball; nothing else does.  Per-run configuration
(project files, units, autologin, initramfs) lives in guest.py and is cheap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "linux-image-amd64",
    "systemd",
    "systemd-sysv",
    "udev",
    "dracut",
    "kmod",
    "util-linux",
    "e2fsprogs",
    "squashfs-tools",
    "zstd",
    "procps",
    "python3",
    "python3-urwid",
    "python3-psutil",
    "python3-yaml",
    "python3-pyudev",
    # the system bus, as on any standard Debian install (systemd only recommends it, and
    # minbase leaves recommends out): hostnamectl, timedatectl and localectl need it
    "dbus",
    # a conventional Debian disk (tests/vm/disk.py): the bootloader, partitioning, ACLs
    "grub-pc",
    "fdisk",
    "acl",
)
# A second kernel flavour, only downloaded (not installed): the tests install it in the guest
# from the .deb cache (see extra_kernel_debs).
EXTRA_KERNEL = "linux-image-cloud-amd64"


def recipe_key() -> str:
    """Return a short hash of this file: the cache key of the rootfs tarball."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def build_rootfs(out_tar: Path, deb_cache: Path, log: Path) -> None:
    """Build the guest rootfs as a tarball with mmdebstrap (needs root), reusing a .deb cache.

    INITRD=No keeps the kernel's postinst from building a distro initramfs: the tests build
    their own with dracut and the ibi module.  EXTRA_KERNEL and what it needs beyond PACKAGES
    are downloaded into the .deb cache but not installed.
    """
    deb_cache.mkdir(parents=True, exist_ok=True)
    tmp = out_tar.with_name(out_tar.name + ".part")
    cmd = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--components=main",
        "--format=tar",
        "--include=" + ",".join(PACKAGES),
        "--skip=download/empty",
        "--skip=essential/unlink",
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
        f"--setup-hook=sync-in {deb_cache} /var/cache/apt/archives/",
        # before sync-out (which saves the .debs) and before the package lists are removed
        "--customize-hook=chroot \"$1\" apt-get install --download-only -y"
        f" --no-install-recommends {EXTRA_KERNEL}",
        f"--customize-hook=sync-out /var/cache/apt/archives {deb_cache}",
        "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb",
        "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/*",
        "--customize-hook=rm -f \"$1\"/boot/initrd.img-*",
        SUITE,
        str(tmp),
        MIRROR,
    ]
    env = dict(os.environ, INITRD="No", DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")
    with log.open("wb") as fh:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                       env=env, check=True)
    shutil.move(tmp, out_tar)


def _deb_version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                          capture_output=True, text=True).stdout.strip()


def extra_kernel_debs(deb_cache: Path) -> list[Path]:
    """The .debs of EXTRA_KERNEL in the cache: its metapackage and the kernel it depends on.

    The cache keeps old versions too, so take the newest metapackage and the exact
    linux-image-<abi>-cloud-amd64 it depends on.
    """
    metas = list(deb_cache.glob(f"{EXTRA_KERNEL}_*.deb"))
    if not metas:
        raise FileNotFoundError(f"no {EXTRA_KERNEL} .deb in {deb_cache}: rebuild the rootfs "
                                "(delete rootfs-*.tar in the VM cache)")
    newest = metas[0]
    for m in metas[1:]:
        if subprocess.run(["dpkg", "--compare-versions", _deb_version(m), "gt",
                           _deb_version(newest)]).returncode == 0:
            newest = m
    # Depends: "linux-image-6.12.57+deb13-cloud-amd64 (= 6.12.57-1)"
    dep = subprocess.run(["dpkg-deb", "-f", str(newest), "Depends"], check=True,
                         capture_output=True, text=True).stdout.split(",")[0].split()
    image = deb_cache / f"{dep[0]}_{dep[2].rstrip(')')}_amd64.deb"
    if not image.is_file():
        raise FileNotFoundError(f"{image.name} (needed by {newest.name}) is not in {deb_cache}")
    return [newest, image]
