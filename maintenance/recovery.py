"""Recovery: finishing or undoing an interrupted action, and renewing the boot files.

Crash safety rests on these rules, checked by :func:`recover` (``Engine.recover``) at the
start of every action that changes the store or mounts it:

1. New files are written under ``.tmp-`` names, fsynced, checked, then renamed; a stray
   ``.tmp-`` file is an unfinished write and is removed (its source still exists).
2. roottab is replaced atomically (temp + fsync + rename + fsync of the directory); the
   old version is kept as roottab.prev.
3. Each image made from the writable layer records the layer's id (``source_layer``),
   its newest ctime (``source_stamp``) and the stack it was made on. The layer is cleared
   only after the image and roottab are durable. So if the current layer's id is named
   by an image, the action that made the image was interrupted: if roottab already ends
   the way the action wanted, the layer clear is finished; if roottab still equals the
   stack the image was made on, the action is rolled forward (the image is complete and
   checked). But if the layer changed since (a boot that skipped recovery wrote to it),
   it is kept and given a new id: nothing written is ever cleared by recovery.
4. A fresh layer is prepared in ``layer.new`` with the stack it is meant for. Restore
   commits by renaming the old layer aside; Roll back by writing roottab. Recovery
   finishes the swap when roottab equals the prepared layer's stack, else drops it.
Recovery never touches a layer that a mounted overlay is using.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from . import assemble, bootloader, bootplan, create, kernels, kernelstore, mounts, restore, trials
from . import layer as layerfs
from .errors import IbiError, NoSpace, StoreError
from .fsio import durable_rename, fsync_dir, remove_tree
from .model import Kind
from .store import FROM_TRASH

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("maintenance.engine")  # the engine's log, as before the split


def recover(eng: Engine) -> list[str]:
    """Finish or undo an interrupted action; return what was done (empty if nothing)."""
    eng.store.require()
    try:
        done = eng._recovery(dry_run=False)
        if done:  # what was removed stays removed after a power cut
            for d in (eng.store.root, eng.store.state, eng.store.kernels,
                      eng.store.data):
                if d.is_dir():
                    fsync_dir(d)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise NoSpace("the data partition is full: an interrupted action cannot be "
                      "finished yet (nothing is lost)",
                      hint="free space: ibi purge, ibi delete NAME; then ibi recover"
                      ) from None
    if eng.store.roottab_path.exists() and eng._refresh_quietly():
        done.append("renew the boot plan")
    return done


def refresh_quietly(eng: Engine) -> bool:
    """Renew the boot files after a commit point: a failure (a full disk) is logged,
    not raised: the action is done, and the initramfs renews a stale plan at boot."""
    try:
        return eng.refresh_boot_files()
    except (IbiError, OSError) as e:
        log.warning("the boot plan was not renewed (%s): the next boot or action "
                    "renews it", e)
        return False


def refresh_boot_files(eng: Engine) -> bool:
    """Write the boot plan (and, on a machine set up by ibi install, GRUB's menu) for
    the store as it is now; returns whether anything changed. Called after every change
    of roottab or of the images, after their commit point."""
    changed = bootplan.write(eng.store)
    if eng.store.bootloader_conf.is_file():
        try:
            changed = bootloader.write_grub_cfg(eng.store) or changed
        except (IbiError, OSError) as e:
            # the plan (what the initramfs reads) is written; a broken menu setting
            # must not block the store's actions: the menu keeps its last good version,
            # and with it every kernel that version may boot
            log.warning("GRUB's menu was not renewed: %s", e)
            return changed
    # only once the menu names them no more: kernels the last image (or layer) that had
    # them took away
    if kernelstore.gc(eng.store):
        changed = True
    return changed


def sync_kernels(eng: Engine) -> list[str]:
    """Renew the boot files; first, in the running system (the writable layer in use
    by the overlay on ``/``, or on another mount point), keep the kernels installed
    there that the stack lacks, so that the next normal boot uses them. The kernel
    packages' hook runs this (``ibi boot-entries --write``). Returns warnings."""
    eng.store.require()
    live = assemble.live_overlay(eng)
    warnings = []
    if live is None:  # the initramfs renewing a stale plan: finish what a power cut
        eng._recover_or_go_on("the boot entries")  # interrupted first (a layer
        # missing between its clear and the new one, say)
    if live is not None:  # the space check only when something is copied: the hook
        # also runs when a kernel is removed (to free space, say)
        warnings = kernels.sync_layer(
            eng.store, Path(live), eng.store.read_roottab(),
            lambda need: create.check_space(eng, need + create.SPACE_MARGIN, "keep the new kernel"))
    eng.refresh_boot_files()
    return warnings


def recovery(eng: Engine, dry_run: bool) -> list[str]:
    """What recovery does (or, with ``dry_run``, would do) for the store as it is."""
    st = eng.store
    done: list[str] = []
    stacks = eng.run_dir / "stacks"
    for stage in sorted((*stacks.glob("view-*"), *stacks.glob("state-*"),
                         *stacks.glob("image-*"))):
        pid = stage.name.partition("-")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            done.append(f"take down the mounts left by an interrupted action ({pid})")
            if not dry_run:
                mounts.umount_all([stage])
                shutil.rmtree(stage, ignore_errors=True)
    for p in (*st.stray_tmp(), *st.stray_kernel_tmp()):
        done.append(f"remove unfinished {p.name}")
        if not dry_run:
            remove_tree(p)
    # metadata written but the image never renamed into place: an unfinished create
    for n in st.image_names():
        if not st.has_image(n) and st.meta_path(n).exists():
            meta = st.try_meta(n)
            if meta is not None and meta.source_layer is not None:
                done.append(f"remove metadata of unfinished image {n}")
                if not dry_run:
                    st.meta_path(n).unlink()
                    fsync_dir(st.root)
    if not st.home.is_dir():
        done.append("create home/")
        if not dry_run:
            st.home.mkdir(mode=0o755)
    if assemble.live_overlay(eng) is not None:
        return done  # the running system's layer: left alone
    try:
        tab: list[str] | None = st.read_roottab()
    except StoreError:
        tab = None
    back = st.layer_new / FROM_TRASH  # an undo (or a fallback) putting a layer back
    if not st.layer.is_dir():
        if st.layer_new.is_dir():
            done.append("put the prepared fresh writable layer in place")
            if not dry_run:
                durable_rename(st.layer_new, st.layer)
                restore.forget_origin(eng)
        else:
            done.append("create an empty writable layer")
            if not dry_run:
                st.make_layer(st.layer)
    elif st.layer_new.exists():
        if tab is not None and st.layer_stack(st.layer_new) == tab:
            done.append("finish putting the fresh writable layer in place")
            if not dry_run:
                restore.swap_in_new_layer(eng)
                restore.forget_origin(eng)
        elif back.is_file():
            done.append("put a set-aside layer back in trash/ (its undo was "
                        "interrupted)")
            if not dry_run:
                restore.return_to_trash(eng)
        else:
            done.append("remove an unfinished fresh layer")
            if not dry_run:
                remove_tree(st.layer_new)
    lid = st.layer_id()
    if lid is None and st.layer.is_dir() and st.upper.is_dir():
        done.append("give the writable layer a new id (its id file is missing or "
                    "damaged)")
        if not dry_run:
            st.renew_layer_id()
    if lid is None or tab is None or not st.upper.is_dir():
        return done
    for meta in eng.images():
        if meta.source_layer != lid:
            continue
        want = [meta.name] if meta.kind is Kind.FULL else [*meta.stack, meta.name]
        if meta.source_stamp != layerfs.stats(st.upper).newest:
            done.append(f"keep the writable layer: it changed after {meta.name} was "
                        "made from it")
            if not dry_run:
                st.renew_layer_id()
        elif tab == want:
            done.append(f"clear the writable layer already squashed into {meta.name}")
            if not dry_run:
                create.clear_squashed_layer(eng)
        elif tab == list(meta.stack):
            done.append(f"finish creating {meta.name}: put it in roottab, clear the layer")
            if not dry_run:
                trials.arm_trial(eng, want, tab, "create", None)
                st.write_roottab(want)
                create.clear_squashed_layer(eng)
        break
    return done
