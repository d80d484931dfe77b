"""Making and checking squashfs images (mksquashfs / unsquashfs) and their checksums."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .model import Progress, ProgressFn
from .run import run, run_with_progress, which

COMPRESSORS = ("zstd", "gzip", "xz", "lz4", "lzo")
DEFAULT_COMPRESSOR = "zstd"
# mksquashfs's own zstd default is level 15; measured here it is ~20x slower than
# level 3 for ~11% smaller images. A restore point is made while the user waits.
DEFAULT_LEVEL = {"zstd": 3, "gzip": 6, "lzo": 8}
_LEVELS = {"zstd": (1, 22), "gzip": (1, 9), "lzo": (1, 9)}
_CHUNK = 1 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writing dirty pages back, do not wait


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages to the disk now, without
    waiting (sync_file_range(2), SYNC_FILE_RANGE_WRITE): only a head start for the fsync
    that makes the file durable, so any failure is ignored."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes  # here: the menu and ibi status never squash

        _libc().sync_file_range(ctypes.c_int(fd), ctypes.c_int64(0), ctypes.c_int64(0),
                                ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def compression_args(compressor: str, level: int | None) -> list[str]:
    if compressor not in COMPRESSORS:
        raise UsageError(
            f"unknown compressor {compressor!r}: choose one of {', '.join(COMPRESSORS)}")
    args = ["-comp", compressor]
    if level is None:
        level = DEFAULT_LEVEL.get(compressor)
    elif compressor not in _LEVELS:
        raise UsageError(f"compressor {compressor} takes no level")
    if level is not None:
        lo, hi = _LEVELS[compressor]
        if not lo <= level <= hi:
            raise UsageError(f"{compressor} level must be {lo}..{hi}, not {level}")
        args += ["-Xcompression-level", str(level)]
    return args


def mksquashfs(src: Path, dest: Path, *, compressor: str = DEFAULT_COMPRESSOR,
               level: int | None = None, excludes: Sequence[str] = (),
               progress: ProgressFn | None = None, label: str = "",
               pseudo: Path | None = None) -> None:
    """Squash the tree ``src`` into ``dest`` (overwritten), keeping owners, modes, xattrs,
    hard links, device nodes and sparse files; ``excludes`` are wildcard patterns relative
    to ``src``; ``pseudo`` is a file of mksquashfs pseudo definitions (files added)."""
    argv = [which("mksquashfs"), str(src), str(dest), "-noappend", "-quiet", "-progress",
            *compression_args(compressor, level)]
    if pseudo is not None:
        argv += ["-pf", str(pseudo)]
    if excludes:
        argv += ["-wildcards", "-e", *excludes]

    out: int | None = None  # the image being written, once mksquashfs has made it

    def report(done: int, total: int) -> None:
        # at each step of the bar (a few a second) the image written so far starts going
        # to the disk: the fsync after the squash then has little left to write
        nonlocal out
        if out is None:
            with contextlib.suppress(OSError):
                out = os.open(dest, os.O_RDONLY | os.O_NOFOLLOW)
        if out is not None:
            _start_writeback(out)
        if progress:
            progress(Progress("squashing", done, total, label or dest.name))

    try:
        run_with_progress(argv, report)
    finally:
        if out is not None:
            os.close(out)


def check_image(path: Path) -> None:
    """Raise CommandError unless ``path`` holds a readable squashfs superblock."""
    run([which("unsquashfs"), "-s", str(path)])


def check_superblock(path: Path, size: int) -> str | None:
    """Why the squashfs image ``path`` (whose file should hold ``size`` bytes, its
    metadata's figure) must not be mounted, or None: the initramfs's cheap check before
    it mounts an image (ibi-check.sh, ``ibi_check_image``): the file's size, the magic
    ``hsqs``, version 4.0, a block size that is a power of two 4K..1M (and matches its
    log), and ``bytes_used`` no larger than the file."""
    try:
        with open(path, "rb") as f:
            have = os.fstat(f.fileno()).st_size
            sb = f.read(48)
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if have != size:
        return f"the file has {have} bytes, its metadata says {size}"
    if len(sb) < 48:
        return f"shorter than a squashfs superblock ({have} bytes)"
    if sb[:4] != b"hsqs":
        return "not a squashfs image (no hsqs magic)"
    major, minor = int.from_bytes(sb[28:30], "little"), int.from_bytes(sb[30:32], "little")
    if (major, minor) != (4, 0):
        return f"squashfs version {major}.{minor}, not 4.0"
    block = int.from_bytes(sb[12:16], "little")
    log = int.from_bytes(sb[22:24], "little")
    if not 12 <= log <= 20 or block != 1 << log:
        return f"bad squashfs block size {block}"
    if sb[46:48] != b"\0\0":
        return "bad squashfs bytes_used"
    used = int.from_bytes(sb[40:48], "little")
    if used > have:
        return f"truncated: the superblock says {used} bytes, the file has {have}"
    return None


def sha256(path: Path, progress: ProgressFn | None = None, phase: str = "verifying",
           label: str = "") -> str:
    h = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    step = max(total // 100, _CHUNK)
    next_report = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress and done >= next_report:
                progress(Progress(phase, done, total, label or path.name))
                next_report = done + step
    if progress:
        progress(Progress(phase, total, total, label or path.name))
    return h.hexdigest()
