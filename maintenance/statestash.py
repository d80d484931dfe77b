"""Stashed entries: the files and directories a capture keeps byte for byte (content,
mode, owner, xattrs; the links inside a directory as links). Finding them in a tree
(a symlink is refused), describing them (a digest), copying them into a capture and
syncing them into a fresh system, touching only what differs."""

from __future__ import annotations

import contextlib
import filecmp
import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from . import layer as layerfs
from .errors import StoreError
from .fsio import remove_tree
from .optree import Invalid, real_parent
from .stateconf import GLOB_CHARS


def expand(tree: Path, pattern: str) -> list[str]:
    """The paths of the tree ``pattern`` matches (sorted). A path on the way that is a
    symlink, or a match that is one, is refused: a stash keeps the system's own files."""
    parent, _, last = pattern.rpartition("/")
    try:
        real_parent(tree, pattern)
    except FileNotFoundError:
        return []
    except Invalid as e:
        raise StoreError(f"stash {pattern}: {e}") from None
    if GLOB_CHARS & set(last):
        try:
            names = sorted(n for n in os.listdir(tree / parent.lstrip("/"))
                           if fnmatch.fnmatchcase(n, last))
        except (FileNotFoundError, NotADirectoryError):
            return []
    else:
        names = [last] if os.path.lexists(tree / pattern.lstrip("/")) else []
    out = []
    for n in names:
        p = f"{parent}/{n}"
        full = tree / p.lstrip("/")
        if full.is_symlink():
            target = os.readlink(full)
            out_of = _climbs_out(parent, target)
            raise StoreError(f"stash {p}: a symlink (-> {target})"
                             + (" out of the tree" if out_of else "")
                             + "; a stash keeps files and directories: declare the path "
                             "it leads to")
        out.append(p)
    return out


def _climbs_out(parent: str, target: str) -> bool:
    depth = len([x for x in parent.split("/") if x])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part and part != ".":
            depth += 1
    return False


def _entry_digest(root: Path, path: str, skip: Callable[[str], bool]) -> tuple[str, str]:
    """(a one-line description, a sha256 over content, type, mode, owner and xattrs) of
    the entry at ``path`` in ``root`` and everything below it (minus ``skip``)."""
    h = hashlib.sha256()
    files = dirs = size = 0
    top = root / path.lstrip("/")
    todo = [(top, path)]
    while todo:
        full, p = todo.pop()
        if skip(p):
            continue
        st = os.lstat(full)
        h.update(f"{p}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                 f"{st.st_uid}\0{st.st_gid}\0".encode())
        with contextlib.suppress(OSError):
            for x in sorted(os.listxattr(full, follow_symlinks=False)):
                h.update(x.encode() + b"\0" + os.getxattr(full, x, follow_symlinks=False))
        if stat.S_ISDIR(st.st_mode):
            dirs += 1
            todo += [(full / n, f"{p}/{n}") for n in sorted(os.listdir(full), reverse=True)]
        elif stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(full).encode())
        elif stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
            with open(full, "rb") as f:
                while chunk := f.read(1 << 16):
                    h.update(chunk)
        else:
            h.update(str(st.st_rdev).encode())
    digest = h.hexdigest()
    if stat.S_ISDIR(os.lstat(top).st_mode):
        what = f"directory, {files} file{'s' if files != 1 else ''}"
    else:
        what = f"file, {size} bytes"
    return f"{what}, sha256 {digest[:12]}", digest


def _copy(src: Path, dst: Path, path: str, skip: Callable[[str], bool]) -> None:
    """Copy the entry ``src`` (at ``path``) to ``dst``, as layer.copy_entry, minus ``skip``."""
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst)
        for n in sorted(os.listdir(src)):
            if not skip(f"{path}/{n}"):
                _copy(src / n, dst / n, f"{path}/{n}", skip)
        layerfs.copy_meta(str(src), str(dst), st)
    else:
        layerfs.copy_entry(str(src), str(dst))


def _make_parents(src_root: Path, dst_root: Path, path: str) -> None:
    """Create the directories above ``path`` in ``dst_root`` that are missing, with the
    owner and mode they have in ``src_root``; refuse a symlink on the way."""
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = dst_root.joinpath(*parts[:i])
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            os.mkdir(d, 0o700)
            s = src_root.joinpath(*parts[:i])
            if s.is_dir() and not s.is_symlink():
                layerfs.copy_meta(str(s), str(d), os.lstat(s), xattrs=False)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise Invalid(f"/{'/'.join(parts[:i])} is not a directory in this system")


def _same(src: Path, s: os.stat_result, dst: Path, d: os.stat_result) -> bool:
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(d.st_mode) or (s.st_uid, s.st_gid) != (
            d.st_uid, d.st_gid):
        return False
    if stat.S_ISLNK(s.st_mode):
        return os.readlink(src) == os.readlink(dst)
    if stat.S_ISREG(s.st_mode):
        return stat.S_IMODE(s.st_mode) == stat.S_IMODE(d.st_mode) and \
            filecmp.cmp(src, dst, shallow=False)
    return False


def sync_entry(src: Path, dst: Path, path: str, skip: Callable[[str], bool]) -> bool:
    """Make ``dst`` (at ``path`` of the fresh system) what ``src`` is, touching only what
    differs: an identical file stays the image's (no copy in the layer); what a stashed
    directory lacks is removed; ``skip`` (reference paths) is left alone. Returns whether
    anything changed."""
    if skip(path):
        return False
    s = os.lstat(src)
    try:
        d: os.stat_result | None = os.lstat(dst)
    except FileNotFoundError:
        d = None
    if d is not None and stat.S_ISDIR(s.st_mode) and stat.S_ISDIR(d.st_mode):
        names = set(os.listdir(src))
        changed = False
        for n in sorted(os.listdir(dst)):
            if n not in names and not skip(f"{path}/{n}"):
                remove_tree(dst / n)
                changed = True
        for n in sorted(names):
            changed = sync_entry(src / n, dst / n, f"{path}/{n}", skip) or changed
        if (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) != (
                stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid):
            layerfs.copy_meta(str(src), str(dst), s)
            changed = True
        return changed
    if d is not None:
        if _same(src, s, dst, d):
            return False
        remove_tree(dst)
    _copy(src, dst, path, skip)
    return True
