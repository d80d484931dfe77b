"""Block devices as ``ibi install`` probes them (maintenance/install.py,
maintenance/installplan.py): sysfs for disks, partitions and dm-crypt, blkid for what a
device holds, the mount table for the mount holding a path, udev's database for the
/dev/disk/by-* links. Reading only: nothing here changes a device.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from . import mounts
from .errors import IbiError, UsageError
from .run import run, which


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

