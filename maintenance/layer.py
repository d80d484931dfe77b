"""Reading an overlay upper directory (what it adds, changes and deletes), and copying
file system entries with their owner, mode, times and extended attributes."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from .fsio import walk
from .model import Change, LayerStats

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_XATTR = "trusted.overlay.whiteout"


def is_whiteout(st: os.stat_result, path: str) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        with contextlib.suppress(OSError):
            os.getxattr(path, WHITEOUT_XATTR, follow_symlinks=False)
            return True
    return False


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) in (b"y", b"x")
    except OSError:
        return False


def stats(upper: Path) -> LayerStats:
    nbytes = files = changed = deleted = opaque = 0
    newest = upper.stat().st_ctime_ns
    for entry in walk(upper):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        newest = max(newest, st.st_ctime_ns)
        nbytes += st.st_blocks * 512
        if is_whiteout(st, entry.path):
            deleted += 1
            continue
        files += 1
        if stat.S_ISDIR(st.st_mode):
            if is_opaque(entry.path):
                opaque += 1
        else:
            changed += 1
    return LayerStats(str(upper), nbytes, files, changed, deleted, opaque, newest)


def changes(upper: Path, limit: int | None = None) -> list[Change]:
    """What the layer holds, as paths of the booted system, sorted; at most ``limit``."""
    out: list[Change] = []
    for entry in walk(upper):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        rel = "/" + os.path.relpath(entry.path, upper)
        if is_whiteout(st, entry.path):
            out.append(Change(rel, "deleted", 0))
        elif stat.S_ISDIR(st.st_mode):
            if is_opaque(entry.path):
                out.append(Change(rel, "opaque", 0))
        else:
            out.append(Change(rel, "changed", st.st_size))
    out.sort(key=lambda c: c.path)
    return out[:limit] if limit is not None else out


def copy_xattrs(src: str, dst: str) -> None:
    with contextlib.suppress(OSError):
        for name in os.listxattr(src, follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                            follow_symlinks=False)


def copy_meta(src: str, dst: str, st: os.stat_result, xattrs: bool = True) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    if xattrs:
        copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_entry(src: str, dst: str) -> None:
    """Copy ``src`` (and what is below it) to ``dst`` with owner, mode, xattrs and times.
    Files and directories are created readable by root alone and get their mode last, so
    a private key is never readable by others on the way."""
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst, 0o700)
        for name in sorted(os.listdir(src)):
            copy_entry(os.path.join(src, name), os.path.join(dst, name))
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fo, open(src, "rb") as fi:
            shutil.copyfileobj(fi, fo, 1 << 20)
    else:  # whiteouts, device nodes, fifos, sockets
        os.mknod(dst, st.st_mode, st.st_rdev)
    copy_meta(src, dst, st)
