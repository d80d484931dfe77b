"""Making images: the store's base image (``ibi init``) and restore points (``ibi create``),
with the steps they share with ``ibi import`` and ``ibi compact``: the free-space check,
the kernels kept, the commit of a squashed file (:func:`commit_image`), and the clear of
the writable layer a restore point squashed.

Functions of the :class:`~maintenance.engine.Engine`, which calls them (its methods hold
the store's lock).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from . import assemble, capture, kernels, mounts, reclaim, squash, trials
from . import layer as layerfs
from .errors import NoSpace, NotFound, StoreError, TooDeep, UsageError
from .fsio import durable_rename, fsync_dir, fsync_file, remove_tree, tree_bytes
from .model import ImageMeta, KernelRef, Kind, Progress, ProgressFn
from .records import IMAGE_EXT, check_name, utcnow
from .status import human

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("maintenance.engine")  # the engine's log, as before the split

SPACE_MARGIN = 16 << 20  # squashfs metadata, roottab, yaml


def init(eng: Engine, *, source_dir: str | os.PathLike[str] | None = None,
         image: str | os.PathLike[str] | None = None, name: str = "base",
         description: str = "", compressor: str = squash.DEFAULT_COMPRESSOR,
         level: int | None = None, progress: ProgressFn | None = None,
         excludes: tuple[str, ...] = (), space_needed: int | None = None,
         kernel_files: Mapping[str, tuple[Path, Path]] | None = None) -> ImageMeta:
    """Create a store whose stack is one base image, squashed from a directory tree or
    copied from an existing squashfs file. ``excludes``: more mksquashfs wildcards
    (relative to the tree) to leave out besides ``home/*``; ``space_needed``: the caller's
    estimate of the image's size (default: the tree's size, as if nothing compressed);
    ``kernel_files``: version -> (vmlinuz, initramfs) to keep for the base and boot first
    (ibi install's, built with the ibi module), besides the kernels found in the tree."""
    st = eng.store
    check_name(name)
    if (source_dir is None) == (image is None):
        raise UsageError("give exactly one of a source directory or an image file")
    if not st.data.is_dir():
        raise StoreError(f"data directory {st.data} does not exist")
    if st.exists() and st.roottab_path.exists():
        raise StoreError(f"{st.data} already holds an ibi store")
    if st.exists():
        st.check_dirs()
        held = st.image_names()
        if held or st.roottab_prev_path.exists():
            raise StoreError(
                f"{st.data} holds an ibi store without a roottab (images: "
                f"{' '.join(held) or 'none'}): ibi init would replace its base",
                hint=f"write roottab by hand (one image name a line, bottom first; "
                f"roottab.prev holds the one before the last change) in {st.root}")
    st.root.mkdir(exist_ok=True)
    src = Path(source_dir if source_dir is not None else image)  # type: ignore[arg-type]
    tmp = st.tmp_path(name, IMAGE_EXT)
    try:
        if source_dir is not None:
            if not src.is_dir():
                raise NotFound(f"source directory {src} does not exist")
            kplan = kernels.plan(st, src, (), (), kernel_files)
            need = space_needed if space_needed is not None else tree_bytes(src)
            check_space(eng, need + kplan.needed + SPACE_MARGIN, "squash the base image")
            squash.mksquashfs(src, tmp, compressor=compressor, level=level,
                              excludes=("home/*", *excludes), progress=progress,
                              label=name)
            kept = keep_kernels(eng, kplan)
            capture.capture_quietly(eng, src, "install", [name])
        else:
            if not src.is_file():
                raise NotFound(f"image file {src} does not exist")
            check_space(eng, src.stat().st_size + SPACE_MARGIN, "copy the base image")
            squash.check_image(src)
            _copy(src, tmp, progress)
            with assemble.image_tree(eng, tmp) as tree:
                kplan = kernels.plan(st, tree, (), (), kernel_files)
                check_space(eng, kplan.needed + SPACE_MARGIN, "keep the image's kernels")
                kept = keep_kernels(eng, kplan)
                capture.capture_quietly(eng, tree, "install", [name])
        meta = commit_image(eng, tmp, name, Kind.BASE, description, (), None,
                            compressor, progress, kernels=kept)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    st.home.mkdir(mode=0o755, exist_ok=True)
    st.trash.mkdir(mode=0o700, exist_ok=True)  # ready before the disk may fill up
    if not st.layer.exists():
        st.make_layer(st.layer)
    st.write_roottab([name])
    eng.refresh_boot_files()
    return meta


def create(eng: Engine, kind: Kind, *, name: str | None = None, description: str = "",
           compressor: str = squash.DEFAULT_COMPRESSOR, level: int | None = None,
           progress: ProgressFn | None = None) -> ImageMeta:
    """Make a restore point. INCREMENTAL squashes the writable layer alone and stacks it
    on top; FULL squashes the whole union into one image that becomes the stack. Then
    the writable layer is cleared (after the image and roottab are durable)."""
    if kind not in (Kind.FULL, Kind.INCREMENTAL):
        raise UsageError("a restore point is full or incremental")
    eng.recover()
    st = eng.store
    squash.compression_args(compressor, level)  # validate before any work
    tab = st.read_roottab()
    for n in tab:
        if not st.has_image(n):
            raise NotFound(f"image {n!r} in roottab is missing")
    name = check_name(name or _default_name(kind))
    if st.has_image(name) or st.meta_path(name).exists():
        raise UsageError(f"an image named {name!r} already exists")
    assemble.refuse_if_live(eng)
    _rescue_home(eng)
    lid = st.layer_id()
    layer = layerfs.stats(st.upper)  # nothing writes to it from here: not live
    if kind is Kind.INCREMENTAL and layer.files == 0 and layer.deleted == 0:
        raise UsageError("the writable layer is empty: nothing to put in an incremental "
                         "restore point")
    tmp = st.tmp_path(name, IMAGE_EXT)
    # the kernels it boots: the stack's, and the layer's (installed in it since)
    stack_ks = kernels.stack_kernels(st, tab)
    layer_ks = kernels.layer_kernels(st, tab) or ()
    previous = layer_ks or stack_ks
    known = (*stack_ks, *layer_ks)
    if kind is Kind.INCREMENTAL:
        _check_depth(eng, len(tab) + 1, previous)
    ks: tuple[KernelRef, ...] = stack_ks
    try:
        if kind is Kind.INCREMENTAL:
            with assemble.view(eng, tab) as view:
                # the state of a restore point is known good: captured with it
                kplan = kernels.plan(st, view, previous, known) \
                    if _layer_touches_kernels(eng) else None
                check_space(eng, layer.bytes + layer.bytes // 100
                            + (kplan.needed if kplan else 0) + SPACE_MARGIN,
                            "squash the writable layer")
                capture.capture_quietly(eng, view, "restore-point", tab)
                squash.mksquashfs(st.upper, tmp, compressor=compressor, level=level,
                                  excludes=("home/*",), progress=progress, label=name)
                if kplan:
                    ks = keep_kernels(eng, kplan)
        else:
            images = sum(st.image_path(n).stat().st_size for n in tab)
            with assemble.view(eng, tab) as view:
                kplan = kernels.plan(st, view, previous, known)
                check_space(eng, images + layer.bytes + kplan.needed + SPACE_MARGIN,
                            "squash the whole system")
                capture.capture_quietly(eng, view, "restore-point", tab)
                squash.mksquashfs(view, tmp, compressor=compressor, level=level,
                                  excludes=("home/*",), progress=progress, label=name)
                ks = keep_kernels(eng, kplan)
        parent = tab[-1] if kind is Kind.INCREMENTAL else None
        meta = commit_image(eng, tmp, name, kind, description, tuple(tab), parent,
                            compressor, progress, source_layer=lid,
                            source_stamp=layer.newest, kernels=ks)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # the commit point: roottab names the new image (on trial until a boot completes)
    new_tab = [*tab, name] if kind is Kind.INCREMENTAL else [name]
    trials.arm_trial(eng, new_tab, tab, "create", None)
    st.write_roottab(new_tab)
    clear_squashed_layer(eng)
    eng._refresh_quietly()  # the new image, the fresh layer's id (a power cut before
    # this leaves a plan older than roottab: the next boot or action renews it)
    return meta


def _default_name(kind: Kind) -> str:
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{'full' if kind is Kind.FULL else 'inc'}"


def _check_depth(eng: Engine, depth: int, boots: tuple[KernelRef, ...]) -> None:
    """Refuse a stack of ``depth`` images that the kernels it boots (else the running
    one) cannot assemble in one overlay: the boot would fail, and so would the full
    restore point that flattens it."""
    limits = [(mounts.max_depth(k.version), k.version) for k in boots] or \
        [(mounts.max_depth(), os.uname().release)]
    limit, version = min(limits)
    if depth > limit:
        raise TooDeep(f"a restore point on top would make the stack {depth} images "
                      f"deep; Linux {version} assembles at most {limit}",
                      hint="ibi compact merges the restore points above the base "
                           "into one; then try again")


def check_space(eng: Engine, need: int, what: str) -> None:
    """Refuse an action that needs ``need`` bytes on the data partition when they are not
    free (after deleting the cleared layers that wait for :mod:`reclaim`)."""
    free = psutil.disk_usage(str(eng.store.data)).free
    if need > free and reclaim.waiting(eng):  # a cleared layer not yet deleted
        reclaim.reclaim(eng)
        free = psutil.disk_usage(str(eng.store.data)).free
    if need > free:
        from . import retention

        prune = retention.shortage_hint(eng, need, free)
        raise NoSpace(f"not enough space to {what}: needs up to {human(need)}, "
                      f"{human(free)} free on {eng.store.data}",
                      hint=f"{prune}; then try again (also ibi purge)" if prune
                      else "free space (ibi purge, ibi delete) and try again")


def _copy(src: Path, dest: Path, progress: ProgressFn | None) -> None:
    total = src.stat().st_size
    done = 0
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        while chunk := fi.read(1 << 20):
            fo.write(chunk)
            done += len(chunk)
            if progress:
                progress(Progress("copying", done, total, src.name))


def commit_image(eng: Engine, tmp: Path, name: str, kind: Kind, description: str,
                 stack: tuple[str, ...], parent: str | None, compressor: str,
                 progress: ProgressFn | None, source_layer: str | None = None,
                 source_stamp: int | None = None,
                 kernels: tuple[KernelRef, ...] = ()) -> ImageMeta:
    """fsync and check the squashed temp file, write its metadata, rename it in.

    The fsync runs in a thread while this one checks the superblock and reads the file
    for its sha256: the reading is done in the page cache, the very bytes the fsync
    writes, so the hashing overlaps the disk write instead of following it. Both are
    done before the metadata is written."""
    st = eng.store
    with ThreadPoolExecutor(1, thread_name_prefix="ibi-fsync") as pool:
        synced = pool.submit(fsync_file, tmp)
        squash.check_image(tmp)
        digest = squash.sha256(tmp, progress, label=name)
        synced.result()
    meta = ImageMeta(name=name, kind=kind, created=utcnow(), sha256=digest,
                     size=tmp.stat().st_size, description=description, parent=parent,
                     stack=stack,
                     source_layer=source_layer, source_stamp=source_stamp,
                     compressor=compressor, kernels=kernels)
    st.write_meta(meta)
    durable_rename(tmp, st.image_path(name))
    return meta


def keep_kernels(eng: Engine, kplan: kernels.Plan) -> tuple[KernelRef, ...]:
    """Keep the kernels of ``kplan`` in the store (a problem is logged)."""
    ks, warnings = kernels.collect(eng.store, kplan)
    for w in warnings:
        log.warning("%s", w)
    return ks


def _layer_touches_kernels(eng: Engine) -> bool:
    """Whether the writable layer changes /boot or the kernel modules (the stack's
    kernels then need a look at the whole system)."""
    up = eng.store.upper
    return any(os.path.lexists(up / d) for d in ("boot", *kernels.MODULE_DIRS))


def _rescue_home(eng: Engine) -> str | None:
    """Move what the writable layer holds under /home into the store's home/ (in a
    directory ``ibi-rescued-STAMP``), before a restore point leaves /home out. Each
    entry is renamed (the same file system): a power cut leaves it in one place or the
    other. Returns where they went, or None."""
    names = eng.home_in_layer()
    if not names:
        return None
    st = eng.store
    dest = st.home / f"ibi-rescued-{utcnow().strftime('%Y%m%dT%H%M%SZ')}"
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    fsync_dir(st.home)
    for n in names:
        os.rename(st.upper / "home" / n, dest / n)
    fsync_dir(dest)
    fsync_dir(st.upper / "home")
    log.warning("the writable layer held %d entries under /home (written while /home "
                "was not bound): moved to /home/%s", len(names), dest.name)
    return str(dest)


def clear_squashed_layer(eng: Engine) -> None:
    """Empty the writable layer whose content an image named by roottab now holds. It
    needs no free space: the old layer is set aside (trash/*-squashed, never put back;
    deleted by :mod:`reclaim`) before the empty one is made (a power cut in between
    leaves no layer, and recovery makes the empty one)."""
    st = eng.store
    if st.layer_new.exists():
        remove_tree(st.layer_new)
    try:
        slot = st.new_trash_slot(st.layer_id(), squashed=True)  # never put back
    except OSError as e:  # no room for trash/ itself: delete the layer where it is
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        slot = st.layer  # (a power cut midway leaves part of a layer whose files
        # the image holds as they are: the view is the same, recovery keeps it)
        remove_tree(slot)  # its content is in the new image: nothing is lost
    else:
        durable_rename(st.layer, slot)
    # the old layer's files are deleted later (maintenance/reclaim.py): ibi create
    # returns without waiting for an rm -rf of the layer; unless the disk is too full
    # for the empty one
    try:
        st.make_layer(st.layer)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or slot == st.layer:
            raise
        remove_tree(st.layer)
        remove_tree(slot)
        st.make_layer(st.layer)
