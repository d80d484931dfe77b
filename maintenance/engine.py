"""The engine: every maintenance action, on a real store and real mounts.

:class:`Engine` is the one entry point for the CLI and the menu. Each method hands the work
to the module of its concern (a function taking the engine first); those that change the
store hold its lock (:func:`~maintenance.enginebase.changes_store`). The modules: status.py
(what status shows), recovery.py (interrupted actions: the crash-safety rules; the boot
files), create.py (init, restore points), restore.py (Restore System, Roll back, Undo, the
fallback), assemble.py (mount, Live Review, umount), trials.py, pending.py (next boot),
delete.py, verify.py, capture.py (the managed config), imports.py, compact.py,
retention.py, reclaim.py.

Engine's methods are here but for three groups it inherits, each from its own module:
engineboot.py (the next boot: the queued action, trials, the fallback), enginestate.py (the
managed config), engineupdates.py (import, compact, pin, prune, reclaim).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path

from . import (
    assemble,
    bootplan,
    create,
    delete,
    kernels,
    mounts,
    recovery,
    restore,
    squash,
    status,
    verify,
)
from . import layer as layerfs
from .enginebase import changes_store
from .engineboot import BootMethods
from .enginestate import StateMethods
from .engineupdates import UpdateMethods
from .errors import (
    NoSpace,
    StoreError,
)
from .fsio import tree_bytes
from .model import (
    Change,
    ImageMeta,
    KernelRef,
    Kind,
    LayerStats,
    MountResult,
    ProgressFn,
    RestoreResult,
    Status,
    UndoResult,
    VerifyReport,
)
from .records import check_name
from .store import Store

log = logging.getLogger(__name__)

DEFAULT_DATA = "/run/ibi/data"
DEFAULT_RUN = "/run/ibi"


class Engine(BootMethods, StateMethods, UpdateMethods):
    """The one entry point for the CLI and the menu (its methods for the next boot, the
    managed config and updates: engineboot.py, enginestate.py, engineupdates.py)."""

    def __init__(self, data_dir: str | os.PathLike[str] = DEFAULT_DATA,
                 run_dir: str | os.PathLike[str] = DEFAULT_RUN) -> None:
        self.store = Store(data_dir)
        self.run_dir = Path(run_dir).absolute()
        self._locked = False
        self.lock_wait: float | None = None  # how long to wait for the store's lock
        # (None: store.LOCK_WAIT)
        self.trial_tries: int | None = None  # boots a new stack gets (None: policy)

    @property
    def data_dir(self) -> Path:
        return self.store.data

    def holds_lock(self) -> bool:
        """Whether this engine is inside an action holding the store's lock."""
        return self._locked

    # ------------------------------------------------------------------ read-only
    def roottab(self) -> list[str]:
        self.store.require()
        return self.store.read_roottab()

    def images(self) -> list[ImageMeta]:
        """Every image in the store with readable metadata, oldest first."""
        self.store.require()
        metas = [m for n in self.store.image_names()
                 if self.store.has_image(n) and (m := self.store.try_meta(n))]
        return sorted(metas, key=lambda m: (m.created, m.name))

    def changes(self, limit: int | None = None) -> list[Change]:
        self.store.require()
        return layerfs.changes(self.store.upper, limit)

    def restore_plan(self) -> LayerStats:
        """What Restore System would discard (what it writes: :meth:`state_plan`)."""
        self.store.require()
        return layerfs.stats(self.store.upper)

    def status(self) -> Status:
        """The stack, the writable layer, disk and RAM use, and anything wrong."""
        return status.status(self)

    def home_in_layer(self) -> list[str]:
        """Files under /home that the writable layer holds (restore points leave them out)."""
        return status.home_in_layer(self)

    def stack_for(self, name: str) -> tuple[str, ...]:
        """The stack (bottom first) that ends at image ``name``."""
        self.store.require()
        check_name(name)
        tab = None
        with contextlib.suppress(StoreError):
            tab = tuple(self.store.read_roottab())
        return bootplan.stack_for(self.store, name, tab)

    review_stack = stack_for

    def booted_normally(self) -> bool:
        """Whether ``/`` is this store's normal boot (its writable layer under the
        overlay on /), rather than a Live Review or another system."""
        return self.store.exists() and any(
            u.pid is None and u.mountpoint == "/"
            for u in mounts.overlays_using(self.store.upper))

    # ------------------------------------------------------------------ recovery
    @changes_store
    def recover(self) -> list[str]:
        """Finish or undo an interrupted action; return what was done (empty if nothing)."""
        return recovery.recover(self)

    def _recovery(self, dry_run: bool) -> list[str]:
        return recovery.recovery(self, dry_run)

    def _recover_or_go_on(self, what: str) -> None:
        """Recovery before an action that does not need it finished: a full disk must not
        block it (delete and purge free space, mount assembles what roottab names)."""
        try:
            self.recover()
        except NoSpace as e:
            log.warning("%s; going on with %s", e, what)

    @changes_store
    def refresh_boot_files(self) -> bool:
        """Write the boot plan (and GRUB's menu, after ibi install) for the store as it is
        now, after every change of roottab or the images; returns whether anything changed."""
        return recovery.refresh_boot_files(self)

    def _refresh_quietly(self) -> bool:
        """:meth:`refresh_boot_files` after a commit point: a failure is logged, not
        raised."""
        return recovery.refresh_quietly(self)

    @changes_store
    def sync_kernels(self) -> list[str]:
        """Renew the boot files; first keep the kernels installed in the running system
        that the stack lacks (the kernel packages' hook). Returns warnings."""
        return recovery.sync_kernels(self)

    # ------------------------------------------------------------------ store actions
    def init(self, *, source_dir: str | os.PathLike[str] | None = None,
             image: str | os.PathLike[str] | None = None, name: str = "base",
             description: str = "", compressor: str = squash.DEFAULT_COMPRESSOR,
             level: int | None = None, progress: ProgressFn | None = None,
             excludes: tuple[str, ...] = (), space_needed: int | None = None,
             kernel_files: Mapping[str, tuple[Path, Path]] | None = None) -> ImageMeta:
        """Create a store whose stack is one base image, squashed from a directory tree or
        copied from an existing squashfs file (maintenance/create.py)."""
        return create.init(self, source_dir=source_dir, image=image, name=name,
                           description=description, compressor=compressor, level=level,
                           progress=progress, excludes=excludes, space_needed=space_needed,
                           kernel_files=kernel_files)

    @changes_store
    def create(self, kind: Kind, *, name: str | None = None, description: str = "",
               compressor: str = squash.DEFAULT_COMPRESSOR, level: int | None = None,
               progress: ProgressFn | None = None) -> ImageMeta:
        """Make a restore point (INCREMENTAL: the writable layer on top; FULL: the whole
        union, the new stack), then clear the writable layer (maintenance/create.py)."""
        return create.create(self, kind, name=name, description=description,
                             compressor=compressor, level=level, progress=progress)

    def _commit_image(self, tmp: Path, name: str, kind: Kind, description: str,
                      stack: tuple[str, ...], parent: str | None, compressor: str,
                      progress: ProgressFn | None, source_layer: str | None = None,
                      source_stamp: int | None = None,
                      kernels: tuple[KernelRef, ...] = ()) -> ImageMeta:
        return create.commit_image(self, tmp, name, kind, description, stack, parent,
                                   compressor, progress, source_layer, source_stamp, kernels)

    def _check_space(self, need: int, what: str) -> None:
        create.check_space(self, need, what)

    def _keep_kernels(self, kplan: kernels.Plan) -> tuple[KernelRef, ...]:
        return create.keep_kernels(self, kplan)

    @changes_store
    def restore(self, keep_current: Collection[str] = (),
                discarded: LayerStats | None = None) -> RestoreResult:
        """Restore System: set the writable layer aside and put a fresh one in place, with
        the managed config rendered into it (maintenance/restore.py)."""
        return restore.restore(self, keep_current, discarded)

    @changes_store
    def rollback(self, name: str, keep_current: Collection[str] = (),
                 reason: str = "rollback") -> tuple[str, ...]:
        """Make the stack end at ``name`` (ibi rollback, ibi switch), and set the writable
        layer aside; the new stack is put on trial. Returns the new stack
        (maintenance/restore.py)."""
        return restore.rollback(self, name, keep_current, reason)

    def undo_plan(self) -> tuple[str, list[str], LayerStats] | None:
        """What ``restore --undo`` puts back: (trash entry, its stack, what it holds)."""
        return restore.undo_plan(self)

    @changes_store
    def undo(self) -> UndoResult:
        """Put back the writable layer set aside last, with its stack; the current layer is
        set aside in turn (an undo can be undone)."""
        return restore.undo(self)

    def delete_blocker(self, name: str) -> str | None:
        """Why image ``name`` cannot be deleted now, or None if it can."""
        return delete.delete_blocker(self, name)

    @changes_store
    def delete(self, name: str) -> None:
        """Delete an image nothing needs (see :meth:`delete_blocker`)."""
        delete.delete(self, name)

    def trash_bytes(self) -> int:
        """What the set-aside layers hold (what purge would delete)."""
        self.store.require()
        return sum((tree_bytes(p) for p in self.store.trash_entries()), 0)

    @changes_store
    def purge(self) -> int:
        """Delete the layers set aside by Restore System and Roll back."""
        return delete.purge(self)

    def verify(self, *, all_images: bool = False,
               progress: ProgressFn | None = None) -> VerifyReport:
        """Checksum every image of the stack (or the store) against its metadata."""
        return verify.verify(self, all_images=all_images, progress=progress)

    # ------------------------------------------------------------------ mounts
    @changes_store
    def mount(self, target: str | os.PathLike[str], *, fallback: bool = False,
              readonly: bool = False) -> MountResult:
        """Assemble the root on ``target``: the images under overlayfs with the writable
        layer as upper (none: ``readonly``), the store's home/ on /home; ``fallback``:
        roottab.prev when roottab cannot be mounted. Holds the store's lock while it mounts
        (maintenance/assemble.py)."""
        return assemble.mount(self, target, fallback=fallback, readonly=readonly)

    def review(self, name: str, target: str | os.PathLike[str], *,
               tmpfs_size: str | None = None) -> MountResult:
        """Live Review: the stack up to ``name`` under a fresh tmpfs upper, /home on top.
        Nothing written there persists."""
        return assemble.review(self, name, target, tmpfs_size=tmpfs_size)

    def umount(self, target: str | os.PathLike[str]) -> int:
        """Take down everything :meth:`mount` or :meth:`review` put up for ``target``;
        a mount ibi did not make there is left alone."""
        return assemble.umount(self, target)

    def _image_tree(self, image: Path) -> contextlib.AbstractContextManager[Path]:
        """A squashfs file mounted read-only, for a look inside."""
        return assemble.image_tree(self, image)

    def _mounted_images(self) -> set[str]:
        return assemble.mounted_images(self)

    def _live_overlay(self) -> str | None:
        return assemble.live_overlay(self)
