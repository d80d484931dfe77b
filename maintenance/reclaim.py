"""Deleting the writable layers that restore points cleared, after the restore point is made.

A restore point's layer is squashed into an image; once roottab names the image, the layer is
renamed into ``trash/`` with the ``-squashed`` suffix (never put back) and a fresh one takes
its place. Deleting the old one's files costs as much as ``rm -rf`` (a fifth of a 1 GiB
create), so ``ibi create`` returns without it and these functions delete it later:

- :func:`reclaim` moves every ``trash/*-squashed`` entry into ``.root_images/.reclaim``
  (a rename each, under the store's lock), then deletes what ``.reclaim`` holds *without*
  the store's lock, holding a flock on ``.reclaim`` itself, so other actions go on meanwhile
  and two reclaimers never delete the same tree. A power cut midway leaves part of a tree
  there, which the next reclaim deletes; nothing in ``.reclaim`` is ever read again.
- :func:`in_background` starts ``ibi reclaim`` detached, at idle priority, after a create in
  a running system. In the initramfs (``IBI_RECLAIM=later``, set by the boot hook) nothing
  starts: ibi-reclaim.service runs it once the system has booted.
- The engine's free-space check calls :func:`reclaim` itself when the space is short and
  something is waiting here, so a deferred deletion never makes an action fail for space.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import run
from .fsio import fsync_dir, remove_tree, tree_bytes
from .storelayer import SQUASHED

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

RECLAIM_DIR = ".reclaim"
ENV = "IBI_RECLAIM"  # "later": never start a background reclaim (the initramfs)


def directory(eng: Engine) -> Path:
    return eng.store.root / RECLAIM_DIR


def waiting(eng: Engine) -> list[Path]:
    """The cleared layers not yet deleted: ``trash/*-squashed`` and ``.reclaim``'s content."""
    st = eng.store
    out = [p for p in st.trash_entries() if p.name.endswith(SQUASHED)]
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        out += sorted(directory(eng).iterdir())
    return out


def waiting_bytes(eng: Engine) -> int:
    return sum((tree_bytes(p) for p in waiting(eng)), 0)


def _move(eng: Engine) -> None:
    """Rename the ``-squashed`` trash entries into ``.reclaim`` (the caller holds the lock)."""
    st = eng.store
    entries = [p for p in st.trash_entries() if p.name.endswith(SQUASHED)]
    if not entries:
        return
    dest = directory(eng)
    if dest.is_symlink():
        return  # not ours to follow (Store.check_dirs refuses it elsewhere)
    dest.mkdir(mode=0o700, exist_ok=True)
    for p in entries:
        os.rename(p, dest / p.name)  # same directory tree: never a copy
    fsync_dir(dest)
    fsync_dir(st.trash)


def reclaim(eng: Engine) -> int:
    """Delete every cleared layer; returns the bytes freed. Waits for a reclaim already
    running (it then finds little or nothing left)."""
    st = eng.store
    st.require()
    if eng.holds_lock():
        _move(eng)
    else:
        with st.locked(eng.lock_wait):
            _move(eng)
    dest = directory(eng)
    if not dest.is_dir() or dest.is_symlink():
        return 0
    before = shutil.disk_usage(st.data).free
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one deleter at a time; the next one finds less
        for p in sorted(dest.iterdir()):
            with contextlib.suppress(FileNotFoundError):  # another deleter's, gone
                remove_tree(p)
        fsync_dir(dest)
    finally:
        os.close(fd)
    freed = max(0, shutil.disk_usage(st.data).free - before)
    if freed:
        log.info("deleted the cleared writable layers: %d bytes freed", freed)
    return freed


def in_background(eng: Engine) -> bool:
    """Start ``ibi reclaim`` detached at idle priority if anything waits; returns whether
    it started one. Never in the initramfs (IBI_RECLAIM=later): the process would keep the
    menu's mounts busy, and ibi-reclaim.service does it after the boot."""
    if os.environ.get(ENV) == "later" or not waiting(eng):
        return False
    pkg_root = str(Path(__file__).resolve().parent.parent)
    try:
        run.spawn_idle([sys.executable, "-m", "maintenance.cli", "reclaim", "--quiet",
                        "--data", str(eng.store.data)], env={"PYTHONPATH": pkg_root})
    except OSError as e:
        log.warning("cannot start deleting the cleared writable layer (%s): ibi reclaim, "
                    "or ibi-reclaim.service at the next boot, deletes it", e)
        return False
    return True
