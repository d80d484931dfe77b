"""The one module that mounts and unmounts. It always takes down what it put up, in
reverse order, even when a later step fails.

Overlay options: the writable layer's upper must later become a valid *lower* when it is
squashed into an incremental image. So the overlay writes only self-contained changes:
- ``redirect_dir=off``: renaming a directory that comes from an image fails with EXDEV and
  tools fall back to copy + delete, so no ``trusted.overlay.redirect`` xattr points into
  a lower that a later stack may not have.
- ``metacopy=off``: a metadata-only copy-up would leave a file whose data lives below;
  squashed alone it would be empty.
- ``index=off`` and ``xino=off``: nothing in the upper refers to the lowers' file handles or
  inode numbers, which change when images are rebuilt or remounted.
Whiteouts (0/0 character devices) and opaque directories (``trusted.overlay.opaque``)
are exactly what overlayfs honours in lower layers, so they survive squashing.
The initramfs uses the same string (dracut-module/90ibi; a test checks they agree).

Lower paths are passed *relative* to the directory the images are mounted in, named by
their index (``lowerdir=2:1:0``, run from ``…/lower``): util-linux >= 2.39 (Debian 13)
mounts through fsconfig(2), which caps each option's value at 256 bytes, so a list of
absolute paths breaks after a few images.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandError, MountError
from .run import run

log = logging.getLogger(__name__)

OVERLAY_OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off"
FSCONFIG_MAX = 255  # longest option value fsconfig(2) accepts (256 with the NUL)


@dataclass(frozen=True)
class MountInfo:
    mount_id: int
    parent_id: int
    mountpoint: str
    fstype: str
    source: str
    options: str  # per-mount options + super options
    devno: str = ""  # "major:minor" of the mounted file system


def _unescape(s: str) -> str:
    return s.encode().decode("unicode_escape") if "\\" in s else s


def mountinfo() -> list[MountInfo]:
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            a = left.split()
            b = right.split()
            out.append(MountInfo(int(a[0]), int(a[1]), _unescape(a[4]), b[0],
                                 _unescape(b[1]), a[5] + "," + (b[2] if len(b) > 2 else ""),
                                 a[2]))
    return out


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    p = os.path.realpath(path)
    return any(m.mountpoint == p for m in mountinfo())


def mounts_under(path: str | os.PathLike[str]) -> list[MountInfo]:
    """Mounts at or below ``path``, in mount order (parents first)."""
    p = os.path.realpath(path).rstrip("/") or "/"
    prefix = p + "/" if p != "/" else "/"
    return [m for m in mountinfo() if m.mountpoint == p or m.mountpoint.startswith(prefix)]


def stage_dir(run_dir: Path, target: str | os.PathLike[str]) -> Path:
    """Where the image mounts and tmpfs behind ``target`` live (derived, so no state file)."""
    key = hashlib.sha1(os.path.realpath(target).encode()).hexdigest()[:12]
    return run_dir / "stacks" / key


def _mount(argv: Sequence[str], what: str, cwd: Path | None = None) -> None:
    try:
        run(["mount", *argv], cwd=cwd)
    except CommandError as e:
        lines = [ln.strip() for ln in e.stderr.splitlines()
                 if ln.strip() and "dmesg(1) may have more" not in ln]
        raise MountError(f"cannot mount {what}: {lines[-1] if lines else e}") from None


class Mounter:
    """Records each mount it makes; ``unwind()`` takes them down in reverse."""

    def __init__(self) -> None:
        self.done: list[Path] = []

    def image(self, image: Path, mountpoint: Path) -> Path:
        mountpoint.mkdir(parents=True, exist_ok=True)
        _mount(["-t", "squashfs", "-o", "ro,loop", str(image), str(mountpoint)], image.name)
        self.done.append(mountpoint)
        return mountpoint

    def overlay(self, target: Path, lowers: Sequence[Path], upper: Path | None = None,
                work: Path | None = None, readonly: bool = False) -> None:
        """``lowers`` highest first (as overlayfs lists them); when they share a parent
        directory they are passed relative to it (see the module's docstring)."""
        parent = lowers[0].parent
        cwd = parent if all(p.parent == parent for p in lowers) else None
        lowerdir = ":".join(p.name if cwd else str(p) for p in lowers)
        values = [lowerdir, *(str(p) for p in (upper, work) if p is not None)]
        if any(len(v) > FSCONFIG_MAX for v in values):
            raise MountError(f"the stack is too deep or its paths too long for one overlay "
                             f"({len(lowers)} images)",
                             hint="make a full restore point to flatten the stack")
        opts = [f"lowerdir={lowerdir}", OVERLAY_OPTIONS]
        if upper is not None and work is not None:
            opts.insert(1, f"upperdir={upper},workdir={work}")
        if readonly:
            opts.insert(0, "ro")
        _mount(["-t", "overlay", "-o", ",".join(opts), "ibi", str(target)],
               f"overlay on {target}", cwd=cwd)
        self.done.append(target)

    def device(self, dev: str, mountpoint: Path, options: str = "rw") -> None:
        """Mount the file system on block device ``dev``."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        _mount(["-o", options, dev, str(mountpoint)], dev)
        self.done.append(mountpoint)

    def tmpfs(self, mountpoint: Path, size: str | None = None) -> None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        opts = "mode=0755" + (f",size={size}" if size else "")
        _mount(["-t", "tmpfs", "-o", opts, "ibi-tmpfs", str(mountpoint)], "tmpfs")
        self.done.append(mountpoint)

    def bind(self, src: Path, dst: Path, readonly: bool = False) -> None:
        _mount(["--bind", str(src), str(dst)], f"{src} on {dst}")
        self.done.append(dst)
        if readonly:
            _mount(["-o", "remount,bind,ro", str(dst)], f"{dst} read-only")

    def unwind(self) -> None:
        errors = []
        while self.done:
            p = self.done.pop()
            try:
                umount(p)
            except MountError as e:
                errors.append(str(e))
        if errors:
            raise MountError("; ".join(errors))


def umount(path: Path | str) -> None:
    try:
        run(["umount", str(path)])
    except CommandError as e:
        raise MountError(f"cannot unmount {path}: {e.stderr.strip() or e}") from None


def umount_all(paths: Sequence[Path | str]) -> int:
    """Unmount everything at or below each path, newest first (mountinfo lists mounts in
    the order they were made). Returns the count."""
    table = mountinfo()
    wanted: set[int] = set()
    for p in paths:
        if os.path.exists(p):
            wanted.update(m.mount_id for m in mounts_under(p))
    order = [m for m in reversed(table) if m.mount_id in wanted]
    for m in order:
        umount(m.mountpoint)
    return len(order)


@contextlib.contextmanager
def mounting() -> Iterator[Mounter]:
    """A Mounter whose mounts are all undone if the block raises."""
    m = Mounter()
    try:
        yield m
    except BaseException:
        with contextlib.suppress(MountError):
            m.unwind()
        raise


@contextlib.contextmanager
def temporary_mounts() -> Iterator[Mounter]:
    """A Mounter whose mounts are always undone when the block ends."""
    m = Mounter()
    try:
        yield m
    finally:
        m.unwind()
