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


@dataclass(frozen=True)
class MountInfo:
    mount_id: int
    parent_id: int
    mountpoint: str
    fstype: str
    source: str
    options: str  # per-mount options + super options


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
                                 _unescape(b[1]), a[5] + "," + (b[2] if len(b) > 2 else "")))
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


def _mount(argv: Sequence[str], what: str) -> None:
    try:
        run(["mount", *argv])
    except CommandError as e:
        lines = e.stderr.strip().splitlines()
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
        """``lowers`` highest first (as overlayfs lists them)."""
        opts = [f"lowerdir={':'.join(str(p) for p in lowers)}", OVERLAY_OPTIONS]
        if upper is not None and work is not None:
            opts.insert(1, f"upperdir={upper},workdir={work}")
        if readonly:
            opts.insert(0, "ro")
        data = ",".join(opts)
        if len(data) > 4000:
            raise MountError(f"too many images for one overlay mount ({len(lowers)})")
        _mount(["-t", "overlay", "-o", data, "ibi", str(target)], f"overlay on {target}")
        self.done.append(target)

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
