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
absolute paths breaks after a few images. A stack whose list is still longer (about 88
images) is passed one layer per ``lowerdir+=`` option (Linux >= 6.8), up to overlayfs's
own limit of 500 lowers; :func:`max_depth` says which applies to a kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandError, MountError
from .run import run

log = logging.getLogger(__name__)

OVERLAY_OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off"
FSCONFIG_MAX = 255  # longest option value fsconfig(2) accepts (256 with the NUL)
OVERLAY_MAX_LOWERS = 500  # the kernel's OVL_MAX_STACK
LOWERDIR_APPEND = (6, 8)  # the first Linux whose overlayfs takes lowerdir+=


def _release(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def max_depth(release: str | None = None) -> int:
    """The most images one overlay takes on Linux ``release`` (default: the running one):
    500 where ``lowerdir+=`` exists, else as many as fit in one 255-byte ``lowerdir=``
    list of index names (the initramfs counts 1..N, the engine 0..N-1: 88 either way)."""
    if _release(release or os.uname().release) >= LOWERDIR_APPEND:
        return OVERLAY_MAX_LOWERS
    n = 1
    while len(":".join(str(i) for i in range(1, n + 2))) <= FSCONFIG_MAX:
        n += 1
    return n


def lower_options(names: Sequence[str]) -> list[str]:
    """The overlay options naming ``names`` (top first) as lowers: one ``lowerdir=`` list,
    or, when that would pass fsconfig(2)'s limit, one ``lowerdir+=`` per layer."""
    joined = ":".join(names)
    if len(joined) <= FSCONFIG_MAX:
        return [f"lowerdir={joined}"]
    return [f"lowerdir+={n}" for n in names]


@dataclass(frozen=True)
class MountInfo:
    mount_id: int
    parent_id: int
    mountpoint: str
    fstype: str
    source: str
    options: str  # per-mount options + super options
    devno: str = ""  # "major:minor" of the mounted file system


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(s: str) -> str:
    """mountinfo's escapes (``\\040`` for a space, ``\\011``, ``\\012``, ``\\134``),
    leaving every other character (UTF-8 names) as it is."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s) if "\\" in s else s


def mountinfo(pid: int | str = "self") -> list[MountInfo]:
    """The mount table as process ``pid`` sees it (its mount namespace)."""
    out = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            a = left.split()
            b = right.split()
            out.append(MountInfo(int(a[0]), int(a[1]), _unescape(a[4]), b[0],
                                 _unescape(b[1]), a[5] + "," + (b[2] if len(b) > 2 else ""),
                                 a[2]))
    return out


def option_values(m: MountInfo, key: str) -> list[str]:
    """The values of option ``key=`` of a mount, unescaped (commas in paths are escaped)."""
    return [_unescape(o[len(key) + 1:]) for o in m.options.split(",")
            if o.startswith(key + "=")]


@dataclass(frozen=True)
class OverlayUse:
    """An overlay mount, possibly in another mount namespace, using a given upper."""
    pid: int | None  # a process of that namespace (None: our own namespace)
    mountpoint: str  # as that namespace sees it

    def where(self) -> str:
        return self.mountpoint if self.pid is None else \
            f"{self.mountpoint} (in the mount namespace of process {self.pid})"


def _namespaces() -> dict[str, int | None]:
    """One process of each mount namespace on the machine, ours first (as None)."""
    out: dict[str, int | None] = {}
    with contextlib.suppress(OSError):
        out[os.readlink("/proc/self/ns/mnt")] = None
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                out.setdefault(os.readlink(f"/proc/{d}/ns/mnt"), int(d))
    return out


def overlays_using(upper: Path) -> list[OverlayUse]:
    """Every overlay mount whose upperdir is ``upper`` (the same directory, by device and
    inode), in any mount namespace this process can look into: the kernel's mount tables
    are the record of who uses a writable layer, so no record can go stale."""
    try:
        st = upper.stat()
    except OSError:
        return []
    ident = (st.st_dev, st.st_ino)
    found = []
    for pid in _namespaces().values():
        try:
            table = mountinfo(pid if pid is not None else "self")
        except OSError:
            continue  # the process is gone, or we may not look
        root = "" if pid is None else f"/proc/{pid}/root"
        for m in table:
            if m.fstype != "overlay":
                continue
            for path in option_values(m, "upperdir"):
                with contextlib.suppress(OSError):
                    s = os.stat(root + path)
                    if (s.st_dev, s.st_ino) == ident:
                        found.append(OverlayUse(pid, m.mountpoint))
    return found


def mount_at(path: str | os.PathLike[str]) -> MountInfo | None:
    """The topmost mount on ``path``, if it is a mount point."""
    p = os.path.realpath(path)
    found = [m for m in mountinfo() if m.mountpoint == p]
    return found[-1] if found else None


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
        directory they are passed relative to it (see the module's docstring). A
        read-only stack of one image gets an empty directory beside it as a second lower
        (overlayfs wants two lowers when there is no upper)."""
        if upper is None and len(lowers) == 1:
            empty = lowers[0].parent / "empty"
            empty.mkdir(exist_ok=True)
            lowers = [lowers[0], empty]
        parent = lowers[0].parent
        cwd = parent if all(p.parent == parent for p in lowers) else None
        lowerdirs = lower_options([p.name if cwd else str(p) for p in lowers])
        values = [*(o.split("=", 1)[1] for o in lowerdirs),
                  *(str(p) for p in (upper, work) if p is not None)]
        limit = max_depth()
        if len(lowers) > limit or any(len(v) > FSCONFIG_MAX for v in values) or (
                len(lowerdirs) > 1 and limit < OVERLAY_MAX_LOWERS):
            raise MountError(f"the stack is too deep or its paths too long for one overlay "
                             f"({len(lowers)} images; Linux {os.uname().release} takes "
                             f"{limit})", hint="ibi compact merges its restore points")
        opts = [*lowerdirs, OVERLAY_OPTIONS]
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
