"""The engine: every maintenance action, on a real store and real mounts.

Crash safety rests on three rules, checked by :meth:`Engine.recover` at the start of every
action that changes the store or mounts it:

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

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psutil

from . import bootloader, bootplan, kernels, mounts, operators, reclaim, squash
from . import layer as layerfs
from . import state as statemod
from .errors import (
    IbiError,
    IntegrityError,
    InUse,
    MountError,
    NoSpace,
    NotFound,
    StoreError,
    TooDeep,
    UsageError,
)
from .model import (
    CaptureInfo,
    Change,
    DiskUsage,
    Fallback,
    ImageMeta,
    KernelRef,
    Kind,
    LayerStats,
    Level,
    MountResult,
    Notice,
    Policy,
    Progress,
    ProgressFn,
    RamUsage,
    RegistryValue,
    RestoreResult,
    StackEntry,
    StatePlan,
    Status,
    TmpfsUse,
    Trial,
    UndoResult,
    VerifyItem,
    VerifyReport,
)
from .store import (
    FROM_TRASH,
    IMAGE_EXT,
    MAX_TRIES,
    Store,
    atomic_write,
    check_name,
    durable_rename,
    fsync_dir,
    fsync_file,
    fsync_tree,
    remove_tree,
    tree_bytes,
    utcnow,
)

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def changes_store(method: F) -> F:
    """Run ``method`` holding the store's lock (once per engine: the actions call each
    other)."""
    @functools.wraps(method)
    def locked(self: Engine, *args: Any, **kwargs: Any) -> Any:
        if self._locked or not self.store.exists():
            return method(self, *args, **kwargs)
        with self.store.locked(self.lock_wait):
            self._locked = True
            try:
                return method(self, *args, **kwargs)
            finally:
                self._locked = False
    return locked  # type: ignore[return-value]

DEFAULT_DATA = "/run/ibi/data"
DEFAULT_RUN = "/run/ibi"
LOW_SPACE_FRACTION = 0.10
LOW_SPACE_BYTES = 512 << 20
SPACE_MARGIN = 16 << 20  # squashfs metadata, roottab, yaml


class Engine:
    """The one entry point for the CLI and the menu."""

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

    # ------------------------------------------------------------------ state operators
    def state_config(self) -> statemod.Config:
        self.store.require()
        return statemod.load_config(self.store)

    def state_plan(self, name: str | None = None,
                   keep_current: Collection[str] = ()) -> StatePlan:
        """What Restore System (or Roll back to ``name``) writes into the fresh layer for
        each managed path, beside the value the system holds now."""
        self.store.require()
        cfg = statemod.load_config(self.store)
        statemod.check_choices(cfg, keep_current)
        if name is not None:
            self.stack_for(name)
        cap = statemod.latest(self.store)
        with self._system() as now:
            upper = self.store.upper if self.store.upper.is_dir() else None
            return statemod.plan(cfg, cap, now, upper, keep_current)

    def state_values(self) -> tuple[RegistryValue, ...]:
        """The registry's keys, with the values of the last capture."""
        self.store.require()
        return statemod.values(statemod.load_config(self.store),
                               statemod.latest(self.store))

    def state_captures(self) -> tuple[CaptureInfo, ...]:
        """The captures kept, newest first."""
        self.store.require()
        cfg = statemod.load_config(self.store)
        return tuple(statemod.info(c, cfg) for c in statemod.captures(self.store))

    @changes_store
    def state_set(self, values: Mapping[str, str | None]) -> CaptureInfo:
        """A new capture with ``values`` ("operator.field" -> value; None removes it)
        changed: what Restore System and Roll back write from now on. The running system
        is not changed."""
        self.store.require()
        cfg = statemod.load_config(self.store)
        statemod.ensure_config(self.store)
        try:
            tab = self.store.read_roottab()
        except StoreError:
            tab = []
        cap = statemod.set_values(self.store, cfg, values, tab)
        return statemod.info(cap, cfg)

    def booted_normally(self) -> bool:
        """Whether ``/`` is this store's normal boot (its writable layer under the
        overlay on /), rather than a Live Review or another system."""
        return self.store.exists() and any(
            u.pid is None and u.mountpoint == "/"
            for u in mounts.overlays_using(self.store.upper))

    @changes_store
    def state_save(self, reason: str = "save") -> CaptureInfo | None:
        """Capture the managed state of the system as it is now (the running system, or
        the stack with its writable layer). None when nothing changed since the last
        capture. A stash path refused (a symlink) raises after the rest is captured."""
        self.store.require()
        cfg = statemod.load_config(self.store)
        statemod.ensure_config(self.store)
        tab = self.store.read_roottab()
        with self._system(tab) as tree:
            if tree is None:
                raise StoreError("the system cannot be read (an image of the stack is "
                                 "missing or damaged): nothing captured")
            cap, problems = statemod.capture(self.store, cfg, tree, reason, tab)
        if problems:
            raise StoreError(problems[0], hint=(f"the other values were captured ({cap.id})"
                                                if cap else "the other values are unchanged"))
        return statemod.info(cap, cfg) if cap else None

    def _capture_quietly(self, tree: Path, reason: str, stack: list[str]) -> None:
        """A capture that must not stop the action it belongs to (install, a restore
        point): a problem is logged."""
        try:
            cfg = statemod.load_config(self.store)
            statemod.ensure_config(self.store)
            _cap, problems = statemod.capture(self.store, cfg, tree, reason, stack)
        except Exception as e:  # whatever it is, the action goes on
            problems = [str(e) or type(e).__name__]
        for p in problems:
            log.warning("state capture: %s", p)

    @contextlib.contextmanager
    def _system(self, tab: list[str] | None = None) -> Iterator[Path | None]:
        """The system as it is now, read-only: the running root when the writable layer
        is live, else the stack with its layer; None when it cannot be assembled."""
        live = self._live_overlay()
        if live is not None:
            yield Path(live)
            return
        with contextlib.ExitStack() as stack:
            tree: Path | None = None
            try:
                tree = stack.enter_context(
                    self._view(tab if tab is not None else self.store.read_roottab()))
            except (IbiError, OSError) as e:
                log.warning("the current system cannot be read: %s", e)
            yield tree

    def stack_for(self, name: str) -> tuple[str, ...]:
        """The stack (bottom first) that ends at image ``name``."""
        self.store.require()
        check_name(name)
        tab = None
        with contextlib.suppress(StoreError):
            tab = tuple(self.store.read_roottab())
        return bootplan.stack_for(self.store, name, tab)

    review_stack = stack_for

    def review_kernel_switch(self, name: str) -> str | None:
        """The kernel a Live Review of ``name`` must boot when it is not the one running now
        and GRUB can boot it (a machine set up by ibi install); else None: the review can
        be assembled by the kernel that runs (the initramfs's decision)."""
        if not self.store.bootloader_conf.is_file():
            return None
        ks = kernels.stack_kernels(self.store, self.stack_for(name))
        if not ks or ks[0].version == os.uname().release:
            return None
        return ks[0].version

    @changes_store
    def boot_once(self, entry: str) -> None:
        """Make GRUB boot its entry ``entry`` (e.g. ``ibi-review-NAME``) at the next boot."""
        self.store.require()
        bootloader.set_next_entry(self.store, entry)

    def status(self) -> Status:
        """The stack, the writable layer, disk and RAM use, and anything wrong."""
        self.store.require()
        st = self.store
        notices: list[Notice] = []
        try:
            tab = st.read_roottab()
        except StoreError as e:
            tab = []
            notices.append(Notice(Level.ERROR, str(e)))
            with contextlib.suppress(StoreError):
                prev = st.read_roottab(prev=True)
                notices.append(Notice(Level.INFO, f"roottab.prev names: {' '.join(prev)}"))
        sizes = st.image_sizes()
        stack = tuple(self._entry(n, tab[:i], sizes) for i, n in enumerate(tab))
        others = tuple(self._entry(n, None, sizes) for n in st.image_names() if n not in tab)
        for entry in (*stack, *others):
            if entry.problem:
                lvl = Level.ERROR if entry in stack else Level.WARNING
                notices.append(Notice(lvl, f"{entry.name}: {entry.problem}"))

        layer = layerfs.stats(st.upper) if st.upper.is_dir() else None
        with contextlib.suppress(OSError):
            stray = self.home_in_layer()
            if stray:
                notices.append(Notice(Level.WARNING, f"the writable layer holds {len(stray)} "
                                      "entries under /home (written while /home was not "
                                      "bound): the next restore point moves them to "
                                      "/home/ibi-rescued-*"))
        if layer is None:
            notices.append(Notice(Level.WARNING, "the writable layer is missing "
                                  "(it is recreated empty on the next mount)"))
        store_bytes = sum(sizes.values())
        trash = sum((tree_bytes(p) for p in st.trash_entries()), 0)
        du = psutil.disk_usage(str(st.data))
        disk = DiskUsage(du.total, du.used, du.free, store_bytes,
                         layer.bytes if layer else 0, trash)
        if du.free < max(LOW_SPACE_BYTES, du.total * LOW_SPACE_FRACTION):
            notices.append(Notice(Level.WARNING, f"low space on the data partition: "
                                  f"{human(du.free)} free of {human(du.total)}"))
        notices += ram_notices(ram := self._ram())
        if trash:
            notices.append(Notice(Level.INFO, f"{human(trash)} of set-aside layers await "
                                  "deletion (ibi purge)"))
        try:
            queued = st.read_pending()
            if queued:
                notices.append(Notice(Level.INFO, f"queued for the next boot: {queued['action']}"
                                      + (f" ({queued['name']})" if "name" in queued else "")))
        except StoreError as e:
            notices.append(Notice(Level.ERROR, f"{e} (ibi pending --cancel)"))
        for what in self._recovery(dry_run=True):
            notices.append(Notice(Level.WARNING, f"interrupted action: {what} "
                                  "(done by the next action, or: ibi recover)"))
        boot = kernels.entry_kernels(st, tab or None, None, ()).get("ibi") if tab else None
        if tab and boot is None and st.bootloader_conf.is_file():
            notices.append(Notice(Level.WARNING, "no image of the stack names a kernel: GRUB "
                                  "boots the one ibi install set up"))
        stack_ks = kernels.stack_kernels(st, tab)
        layer_ks = tuple(k.version for k in kernels.layer_kernels(st, tab) or ()
                         if k not in stack_ks)
        trial, boots = self.trial(), 0
        if trial:
            boots = st.count_boots()
            left = max(trial.tries - boots, 0)
            notices.append(Notice(
                Level.WARNING if boots else Level.INFO,
                f"the stack is on trial ({trial.reason}): {boots} of {trial.tries} boots "
                f"used; {'the next boot falls back' if not left else 'when no boot completes'}"
                f" to [{' '.join(trial.good)}]" + (f"; last failure: {trial.failure}"
                                                   if trial.failure else ""), "trial"))
        if trial is None and st.trial_path.exists():
            try:
                st.read_trial()
                notices.append(Notice(Level.INFO, "a trial of another stack is on record "
                                      "(void; ibi boot-ok --cancel removes it)"))
            except StoreError as e:
                notices.append(Notice(Level.WARNING, f"{e} (ibi boot-ok --cancel)"))
        fb = self.last_fallback()
        if fb:
            notices.append(Notice(Level.WARNING, fallback_text(fb), "fallback"))
        try:
            policy = st.read_policy()
        except StoreError as e:
            notices.append(Notice(Level.WARNING, f"{e}: the defaults apply"))
            policy = Policy()
        if len(tab) > policy.max_depth:
            notices.append(Notice(Level.INFO, f"the stack is {len(tab)} images deep (the "
                                  f"policy's bound is {policy.max_depth}): each adds a layer "
                                  "to every file lookup; ibi compact merges its restore "
                                  "points into one", "depth"))
        pinned = tuple(m.name for m in self.images() if m.pinned)
        st.save_meta_cache()
        return Status(str(st.data), stack, others, layer, disk, ram, tuple(notices),
                      boot.version if boot else None, layer_ks, trial, boots, fb, pinned)

    def _entry(self, name: str, below: list[str] | None,
               sizes: dict[str, int]) -> StackEntry:
        """``sizes``: :meth:`Store.image_sizes` (which images are present)."""
        st = self.store
        present = name in sizes
        try:
            meta: ImageMeta | None = st.read_meta(name)
            meta_problem = None
        except (NotFound, StoreError) as e:
            meta, meta_problem = None, str(e)
        problem = None if present else "image file is missing"
        chain_ok = True
        if meta and below is not None:
            want = meta.stack if meta.kind is Kind.INCREMENTAL else ()
            if tuple(below) != tuple(want):
                chain_ok = False
                problem = problem or (
                    f"made on [{' '.join(want)}] but stacked on [{' '.join(below)}]")
        if meta and meta.kind is Kind.INCREMENTAL:
            for n in meta.stack:
                if n not in sizes:
                    chain_ok = False
                    problem = problem or f"parent image {n!r} is missing"
        problem = problem or meta_problem
        return StackEntry(name, meta.kind if meta else None, meta.created if meta else None,
                          sizes.get(name, 0),
                          meta.description if meta else "", meta.parent if meta else None,
                          present, chain_ok and meta is not None, problem,
                          tuple(k.version for k in meta.kernels) if meta else ())

    def _ram(self) -> RamUsage:
        vm = psutil.virtual_memory()
        return RamUsage(vm.total, vm.available, tuple(tmpfs_uppers(self.data_dir)))

    # ------------------------------------------------------------------ recovery
    @changes_store
    def recover(self) -> list[str]:
        """Finish or undo an interrupted action; return what was done (empty if nothing)."""
        self.store.require()
        try:
            done = self._recovery(dry_run=False)
            if done:  # what was removed stays removed after a power cut
                for d in (self.store.root, self.store.state, self.store.kernels,
                          self.store.data):
                    if d.is_dir():
                        fsync_dir(d)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise NoSpace("the data partition is full: an interrupted action cannot be "
                          "finished yet (nothing is lost)",
                          hint="free space: ibi purge, ibi delete NAME; then ibi recover"
                          ) from None
        if self.store.roottab_path.exists() and self._refresh_quietly():
            done.append("renew the boot plan")
        return done

    def _recover_or_go_on(self, what: str) -> None:
        """Recovery before an action that does not need it finished (delete and purge
        free space, mount assembles what roottab names): a full disk must not block them."""
        try:
            self.recover()
        except NoSpace as e:
            log.warning("%s; going on with %s", e, what)

    def _refresh_quietly(self) -> bool:
        """Renew the boot files after a commit point: a failure (a full disk) is logged,
        not raised: the action is done, and the initramfs renews a stale plan at boot."""
        try:
            return self.refresh_boot_files()
        except (IbiError, OSError) as e:
            log.warning("the boot plan was not renewed (%s): the next boot or action "
                        "renews it", e)
            return False

    @changes_store
    def refresh_boot_files(self) -> bool:
        """Write the boot plan (and, on a machine set up by ibi install, GRUB's menu) for
        the store as it is now; returns whether anything changed. Called after every change
        of roottab or of the images, after their commit point."""
        changed = bootplan.write(self.store)
        if self.store.bootloader_conf.is_file():
            try:
                changed = bootloader.write_grub_cfg(self.store) or changed
            except (IbiError, OSError) as e:
                # the plan (what the initramfs reads) is written; a broken menu setting
                # must not block the store's actions: the menu keeps its last good version,
                # and with it every kernel that version may boot
                log.warning("GRUB's menu was not renewed: %s", e)
                return changed
        # only once the menu names them no more: kernels the last image (or layer) that had
        # them took away
        if kernels.gc(self.store):
            changed = True
        return changed

    @changes_store
    def sync_kernels(self) -> list[str]:
        """Renew the boot files; first, in the running system (the writable layer in use
        by the overlay on ``/``, or on another mount point), keep the kernels installed
        there that the stack lacks, so that the next normal boot uses them. The kernel
        packages' hook runs this (``ibi boot-entries --write``). Returns warnings."""
        self.store.require()
        live = self._live_overlay()
        warnings = []
        if live is None:  # the initramfs renewing a stale plan: finish what a power cut
            self._recover_or_go_on("the boot entries")  # interrupted first (a layer
            # missing between its clear and the new one, say)
        if live is not None:  # the space check only when something is copied: the hook
            # also runs when a kernel is removed (to free space, say)
            warnings = kernels.sync_layer(
                self.store, Path(live), self.store.read_roottab(),
                lambda need: self._check_space(need + SPACE_MARGIN, "keep the new kernel"))
        self.refresh_boot_files()
        return warnings

    def _recovery(self, dry_run: bool) -> list[str]:
        st = self.store
        done: list[str] = []
        stacks = self.run_dir / "stacks"
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
        if self._live_overlay() is not None:
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
                    self._forget_origin()
            else:
                done.append("create an empty writable layer")
                if not dry_run:
                    st.make_layer(st.layer)
        elif st.layer_new.exists():
            if tab is not None and st.layer_stack(st.layer_new) == tab:
                done.append("finish putting the fresh writable layer in place")
                if not dry_run:
                    self._swap_in_new_layer()
                    self._forget_origin()
            elif back.is_file():
                done.append("put a set-aside layer back in trash/ (its undo was "
                            "interrupted)")
                if not dry_run:
                    self._return_to_trash()
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
        for meta in self.images():
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
                    self._clear_squashed_layer()
            elif tab == list(meta.stack):
                done.append(f"finish creating {meta.name}: put it in roottab, clear the layer")
                if not dry_run:
                    self._arm_trial(want, tab, "create", None)
                    st.write_roottab(want)
                    self._clear_squashed_layer()
            break
        return done

    # ------------------------------------------------------------------ store actions
    def init(self, *, source_dir: str | os.PathLike[str] | None = None,
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
        st = self.store
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
                self._check_space(need + kplan.needed + SPACE_MARGIN, "squash the base image")
                squash.mksquashfs(src, tmp, compressor=compressor, level=level,
                                  excludes=("home/*", *excludes), progress=progress,
                                  label=name)
                kept = self._keep_kernels(kplan)
                self._capture_quietly(src, "install", [name])
            else:
                if not src.is_file():
                    raise NotFound(f"image file {src} does not exist")
                self._check_space(src.stat().st_size + SPACE_MARGIN, "copy the base image")
                squash.check_image(src)
                self._copy(src, tmp, progress)
                with self._image_tree(tmp) as tree:
                    kplan = kernels.plan(st, tree, (), (), kernel_files)
                    self._check_space(kplan.needed + SPACE_MARGIN, "keep the image's kernels")
                    kept = self._keep_kernels(kplan)
                    self._capture_quietly(tree, "install", [name])
            meta = self._commit_image(tmp, name, Kind.BASE, description, (), None,
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
        self.refresh_boot_files()
        return meta

    @changes_store
    def create(self, kind: Kind, *, name: str | None = None, description: str = "",
               compressor: str = squash.DEFAULT_COMPRESSOR, level: int | None = None,
               progress: ProgressFn | None = None) -> ImageMeta:
        """Make a restore point. INCREMENTAL squashes the writable layer alone and stacks it
        on top; FULL squashes the whole union into one image that becomes the stack. Then
        the writable layer is cleared (after the image and roottab are durable)."""
        if kind not in (Kind.FULL, Kind.INCREMENTAL):
            raise UsageError("a restore point is full or incremental")
        self.recover()
        st = self.store
        squash.compression_args(compressor, level)  # validate before any work
        tab = st.read_roottab()
        for n in tab:
            if not st.has_image(n):
                raise NotFound(f"image {n!r} in roottab is missing")
        name = check_name(name or self._default_name(kind))
        if st.has_image(name) or st.meta_path(name).exists():
            raise UsageError(f"an image named {name!r} already exists")
        self._refuse_if_live()
        self._rescue_home()
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
            self._check_depth(len(tab) + 1, previous)
        ks: tuple[KernelRef, ...] = stack_ks
        try:
            if kind is Kind.INCREMENTAL:
                with self._view(tab) as view:
                    # the state of a restore point is known good: captured with it
                    kplan = kernels.plan(st, view, previous, known) \
                        if self._layer_touches_kernels() else None
                    self._check_space(layer.bytes + layer.bytes // 100
                                      + (kplan.needed if kplan else 0) + SPACE_MARGIN,
                                      "squash the writable layer")
                    self._capture_quietly(view, "restore-point", tab)
                    squash.mksquashfs(st.upper, tmp, compressor=compressor, level=level,
                                      excludes=("home/*",), progress=progress, label=name)
                    if kplan:
                        ks = self._keep_kernels(kplan)
            else:
                images = sum(st.image_path(n).stat().st_size for n in tab)
                with self._view(tab) as view:
                    kplan = kernels.plan(st, view, previous, known)
                    self._check_space(images + layer.bytes + kplan.needed + SPACE_MARGIN,
                                      "squash the whole system")
                    self._capture_quietly(view, "restore-point", tab)
                    squash.mksquashfs(view, tmp, compressor=compressor, level=level,
                                      excludes=("home/*",), progress=progress, label=name)
                    ks = self._keep_kernels(kplan)
            parent = tab[-1] if kind is Kind.INCREMENTAL else None
            meta = self._commit_image(tmp, name, kind, description, tuple(tab), parent,
                                      compressor, progress, source_layer=lid,
                                      source_stamp=layer.newest, kernels=ks)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        # the commit point: roottab names the new image (on trial until a boot completes)
        new_tab = [*tab, name] if kind is Kind.INCREMENTAL else [name]
        self._arm_trial(new_tab, tab, "create", None)
        st.write_roottab(new_tab)
        self._clear_squashed_layer()
        self._refresh_quietly()  # the new image, the fresh layer's id (a power cut before
        # this leaves a plan older than roottab: the next boot or action renews it)
        return meta

    @changes_store
    def restore(self, keep_current: Collection[str] = (),
                discarded: LayerStats | None = None) -> RestoreResult:
        """Restore System: set the writable layer aside (a rename, whatever its size) and
        put a fresh one in place, with the managed config rendered from the last capture
        (or, for the choices in ``keep_current``, kept as it is now). ``discarded``: the
        figures the caller showed before asking (:meth:`restore_plan`), else they are
        counted in the set-aside layer after the commit: nothing before the commit takes
        time in proportion to the layer."""
        self.recover()
        self._refuse_if_live()
        statemod.check_choices(statemod.load_config(self.store), keep_current)
        trash, written, kept, warnings = self._fresh_layer(carry=True, keep=keep_current)
        self._refresh_quietly()  # a kernel installed in the layer is gone with it
        if discarded is None:
            discarded = layerfs.stats(trash / "upper")
        return RestoreResult(discarded, str(trash), tuple(written), tuple(kept),
                             tuple(warnings))

    @changes_store
    def rollback(self, name: str, keep_current: Collection[str] = (),
                 reason: str = "rollback") -> tuple[str, ...]:
        """Make the stack end at ``name`` (ibi rollback, ibi switch: newer or other
        images are kept, to switch back with the same command), and set the writable layer
        aside, as its changes were made on another stack (``ibi restore --undo`` puts it
        back). The managed config is rendered into the fresh layer as for
        :meth:`restore`. The new stack is put on trial (:meth:`boot_ok`)."""
        self.recover()
        new = self.stack_for(name)
        for n in new:
            if not self.store.has_image(n):
                raise NotFound(f"image {n!r} is missing")
        self._check_images(list(new))
        self._refuse_if_live()
        statemod.check_choices(statemod.load_config(self.store), keep_current)
        *_, warnings = self._fresh_layer(carry=True, new_stack=list(new), keep=keep_current,
                                         reason=reason)
        for w in warnings:
            log.warning("%s", w)
        self.refresh_boot_files()
        return new

    def delete_blocker(self, name: str) -> str | None:
        """Why image ``name`` cannot be deleted now, or None if it can."""
        st = self.store
        st.require()
        check_name(name)
        if not st.has_image(name) and not st.meta_path(name).exists():
            raise NotFound(f"no image named {name!r} in the store")
        if name in st.read_roottab():
            return f"{name!r} is in the active stack; roll back past it first"
        with contextlib.suppress(StoreError):
            if name in st.read_roottab(prev=True):
                return (f"{name!r} is in roottab.prev (the boot fallback); "
                        "make another change to the stack first")
        with contextlib.suppress(StoreError):
            queued = st.read_pending()
            if queued and queued.get("action") == "rollback" and queued.get("name") and \
                    name in self.stack_for(queued["name"]):
                return (f"a roll back to {queued['name']!r} is queued for the next boot "
                        "(ibi pending --cancel first)")
        meta = st.try_meta(name)
        if meta is not None and meta.pinned:
            return f"{name!r} is pinned (ibi unpin {name} first)"
        t = self.trial()
        if t is not None and name in t.good:
            return (f"{name!r} is in the stack the boot falls back to while "
                    f"[{' '.join(t.stack)}] is on trial (ibi boot-ok --cancel first)")
        users = [m.name for m in self.images()
                 if m.kind is Kind.INCREMENTAL and name in m.stack and m.name != name]
        if users:
            return f"{name!r} is needed by {', '.join(users)}"
        if str(st.image_path(name)) in self._mounted_images():
            return f"{name!r} is mounted (a live review?); unmount it first"
        return None

    @changes_store
    def delete(self, name: str) -> None:
        """Delete an image that is neither in the stack, nor the boot fallback, nor
        depended upon, nor mounted."""
        self._recover_or_go_on("the delete")
        st = self.store
        reason = self.delete_blocker(name)
        if reason:
            raise InUse(reason)
        for p in (st.image_path(name), st.meta_path(name)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        fsync_dir(st.root)
        self._refresh_quietly()
        self._recover_or_go_on("the delete")  # with the space now free

    def verify(self, *, all_images: bool = False,
               progress: ProgressFn | None = None) -> VerifyReport:
        """Checksum every image of the stack (or the store) against its metadata."""
        st = self.store
        st.require()
        try:
            names = st.read_roottab()
        except StoreError as e:
            return VerifyReport((VerifyItem("roottab", False, str(e)),))
        if all_images:
            names = [*names, *(n for n in st.image_names() if n not in names)]
        items = []
        for n in names:
            items.append(self._verify_one(n, progress))
        # the kernels those images boot (each checked once), and the layer's
        refs: dict[str, KernelRef] = {}
        for n in names:
            meta = st.try_meta(n)
            for k in meta.kernels if meta else ():
                refs.setdefault(k.id, k)
        with contextlib.suppress(StoreError):
            for k in kernels.layer_kernels(st, st.read_roottab()) or ():
                refs.setdefault(k.id, k)
        for k in refs.values():
            if progress:
                progress(Progress("verifying", 0, 0, f"Linux {k.version}"))
            problem = kernels.check(st, k)
            items.append(VerifyItem(f"kernel {k.id}", problem is None, problem))
        return VerifyReport(tuple(items))

    def _verify_one(self, name: str, progress: ProgressFn | None) -> VerifyItem:
        st = self.store
        if not st.has_image(name):
            return VerifyItem(name, False, "image file is missing")
        try:
            meta = st.read_meta(name)
        except (NotFound, StoreError) as e:
            return VerifyItem(name, False, str(e))
        size = st.image_path(name).stat().st_size
        if size != meta.size:
            return VerifyItem(name, False, f"size {size} differs from metadata {meta.size}")
        if meta.kind is Kind.INCREMENTAL:
            missing = [n for n in meta.stack if not st.has_image(n)]
            if missing:
                return VerifyItem(name, False, f"parent image(s) missing: {' '.join(missing)}")
        digest = squash.sha256(st.image_path(name), progress)
        if digest != meta.sha256:
            return VerifyItem(name, False, "checksum mismatch: the image is corrupted")
        return VerifyItem(name, True)

    # ------------------------------------------------------------------ next boot
    @changes_store
    def queue(self, action: str, *, name: str | None = None, description: str = "",
              keep: Collection[str] = (), reason: str | None = None,
              tries: int | None = None) -> None:
        """Queue Restore System ("restore") or a restore point ("incremental", "full") for
        the next boot, for a running system whose writable layer is in use. The boot path
        runs it (``run_pending``) before it assembles the root. Replaces any queued one.
        ``keep``: for a restore or roll back, the managed paths whose value at that time is
        kept (as ``keep_current``)."""
        self.store.require()
        if action not in ("restore", "incremental", "full", "rollback", "undo"):
            raise UsageError(f"cannot queue {action!r}")
        if name is not None:
            check_name(name)
        if keep:
            if action not in ("restore", "rollback"):
                raise UsageError(f"a queued {action} keeps no config choices")
            statemod.check_choices(statemod.load_config(self.store), keep)
            if any("," in k for k in keep):
                raise UsageError("a path to keep cannot contain a comma")
        if action == "undo" and self.undo_plan() is None:
            raise NotFound("no set-aside writable layer to put back")
        if action == "rollback":
            if name is None:
                raise UsageError("a queued roll back needs the image to roll back to")
            self.stack_for(name)  # it exists, and its stack can be assembled
        doc = {"action": action, "queued": utcnow().isoformat()}
        if name:
            doc["name"] = name
        if description:
            doc["description"] = description
        if reason:
            doc["reason"] = reason
        if tries is not None:
            doc["tries"] = str(check_tries(tries))
        if keep:
            doc["keep"] = ",".join(keep)
        self.store.write_pending(doc)
        self.refresh_boot_files()  # the next boot's kernel is the one after the action

    def pending(self) -> dict[str, str] | None:
        self.store.require()
        return self.store.read_pending()

    @changes_store
    def cancel_pending(self) -> bool:
        self.store.require()
        had = self.store.pending_path.exists()  # also an unreadable one: cancel it
        self.store.clear_pending()
        self.refresh_boot_files()
        return had

    @changes_store
    def run_pending(self, progress: ProgressFn | None = None) -> str | None:
        """Carry out the queued action, if any, and clear it; return what was done."""
        doc = self.pending()
        if doc is None:
            return None
        action = doc["action"]
        keep = [k for k in doc.get("keep", "").split(",") if k]
        if action == "restore":
            res = self.restore(keep)
            done = f"restored: discarded {res.discarded.changed} changed files"
        elif action == "rollback":
            if doc.get("tries", "").isdigit():
                self.trial_tries = check_tries(int(doc["tries"]))
            reason = doc.get("reason", "rollback")
            stack = self.rollback(doc["name"], keep, reason=reason)
            done = f"{'switched' if reason == 'switch' else 'rolled back'}: the stack is " \
                f"{' '.join(stack)}"
        elif action == "undo":
            back = self.undo()
            done = f"undone: the layer {back.put_back} is back on [{' '.join(back.stack)}]"
        else:
            kind = Kind.FULL if action == "full" else Kind.INCREMENTAL
            try:
                meta = self.create(kind, name=doc.get("name"),
                                   description=doc.get("description", ""), progress=progress)
                done = f"created {kind.value} restore point {meta.name}"
            except UsageError as e:  # e.g. the layer was already empty
                done = f"nothing done: {e}"
        self.store.clear_pending()
        self.refresh_boot_files()
        return done


    # ------------------------------------------------------------------ boot trials
    def trial(self) -> Trial | None:
        """The trial the active stack is on, or None (no trial, or one for another stack:
        roottab changed since)."""
        st = self.store
        try:
            t = st.read_trial()
            tab = st.read_roottab()
        except StoreError as e:
            log.warning("%s", e)
            return None
        return t if t is not None and list(t.stack) == tab else None

    def _arm_trial(self, new: list[str], tab: list[str], reason: str,
                   good_layer: str | None) -> None:
        """Before roottab becomes ``new`` (its commit point): put ``new`` on trial. The
        stack to fall back to is the last good one: ``tab``, unless ``tab`` is itself on
        trial (then that trial's good stack). Written before the commit, a trial is void
        until roottab names its stack, so a power cut in between leaves no false trial."""
        st = self.store
        try:
            tries = self.trial_tries if self.trial_tries is not None else \
                st.read_policy().boot_tries
        except StoreError as e:
            log.warning("%s: boots are counted %d times", e, 3)
            tries = 3
        old = self.trial()
        good, layer = (list(old.good), old.good_layer) if old else (tab, good_layer)
        if tries <= 0 or good == new or not good:
            st.clear_trial()
            return
        st.clear_trial()
        st.write_trial(Trial(tuple(new), tuple(good), tries, utcnow(), reason, layer))

    @changes_store
    def boot_ok(self) -> Trial | None:
        """Mark the active stack good: a boot of it completed (ibi-boot-ok.service, after
        boot-complete.target and its health checks). Returns the trial it ended."""
        self.store.require()
        t = self.trial()
        if t is None:
            if self.store.trial_path.exists():  # a trial of another stack: void
                self.store.clear_trial()
            return None
        self.store.clear_trial()
        self._refresh_quietly()
        return t

    @changes_store
    def cancel_trial(self) -> Trial | None:
        """Forget the trial (the active stack is taken as good, no fallback)."""
        self.store.require()
        try:
            t = self.store.read_trial()
        except StoreError:
            t = None  # an unreadable one: forgotten all the same
        self.store.clear_trial()
        self._refresh_quietly()
        return t

    @changes_store
    def boot_failed(self, why: str) -> tuple[Trial | None, int]:
        """Record that this boot of the active stack failed its health checks; returns the
        trial (None: the stack is not on trial) and the boots counted so far."""
        self.store.require()
        t = self.trial()
        if t is None:
            return None, 0
        why = " ".join(why.split())[:300]
        t = dataclasses.replace(t, failure=why)
        self.store.write_trial(t)
        return t, self.store.count_boots()

    @changes_store
    def boot_fallback(self) -> Fallback | None:
        """The initramfs, when the stack on trial has used up its boots: make the good
        stack the active one again, durably, with the writable layer it had (when it is
        still in trash/; else a fresh one with the saved settings). The failed stack's
        layer is set aside (undoable). Returns what was done, None when no fallback is
        due."""
        st = self.store
        st.require()
        self.recover()
        t = self.trial()
        if t is None:
            return None
        boots = st.count_boots()
        if boots < t.tries:
            return None
        good = list(t.good)
        for n in good:
            if not st.has_image(n):
                raise NotFound(f"the good stack's image {n!r} is missing: no fallback")
        self._check_images(good)
        self._refuse_if_live()
        why = t.failure or f"{boots} boots did not complete"
        fb = Fallback(t.stack, t.good, boots, utcnow(), why)
        st.write_fallback(fb)  # shown while roottab is its good stack
        layers = {lid: p for p, lid, stack in st.set_aside_layers() if stack == good}
        if t.good_layer and t.good_layer in layers:
            self._put_back(layers[t.good_layer], good, "fallback", arm=False)
        else:
            self._fresh_layer(carry=True, new_stack=good, arm=False)
        st.clear_trial()
        self._refresh_quietly()
        log.warning("stack [%s] failed %d boots (%s): back on [%s]", " ".join(t.stack),
                    boots, why, " ".join(good))
        return fb

    def last_fallback(self) -> Fallback | None:
        """The last automatic fallback, while its good stack is still the active one."""
        try:
            fb = self.store.read_fallback()
            tab = self.store.read_roottab()
        except StoreError:
            return None
        return fb if fb is not None and list(fb.good) == tab else None

    # ------------------------------------------------------------------ undo
    def undo_plan(self) -> tuple[str, list[str], LayerStats] | None:
        """What ``restore --undo`` puts back: (trash entry, its stack, what it holds)."""
        self.store.require()
        for p, _lid, stack in self.store.set_aside_layers():
            return p.name, stack, layerfs.stats(p / "upper")
        return None

    @changes_store
    def undo(self) -> UndoResult:
        """Put back the writable layer the last Restore System, Roll back, Switch or
        fallback set aside (the newest one in trash/), with the stack it was used on; the
        current layer is set aside in turn, so an undo can be undone."""
        self.recover()
        st = self.store
        self._refuse_if_live()
        cands = st.set_aside_layers()
        if not cands:
            raise NotFound("no set-aside writable layer to put back (none was set aside, "
                           "or ibi purge deleted them)")
        entry, _lid, stack = cands[0]
        for n in stack:
            if not st.has_image(n):
                raise NotFound(f"the layer in {entry.name} was used on [{' '.join(stack)}],"
                               f" but image {n!r} is gone")
        self._check_images(stack)
        tab = st.read_roottab()
        back = layerfs.stats(entry / "upper")
        aside = self._put_back(entry, stack, "undo")
        self._refresh_quietly()
        return UndoResult(entry.name, tuple(stack), tuple(tab), back, aside.name)

    def _put_back(self, entry: Path, stack: list[str], reason: str,
                  arm: bool = True) -> Path:
        """Make trash ``entry`` the writable layer and ``stack`` roottab: the entry is
        renamed to layer.new (marked with where it came from: recovery returns it there
        until roottab names its stack), roottab written (the commit point, when the stack
        changes), then the swap. Returns where the replaced layer went."""
        st = self.store
        tab = st.read_roottab()
        if st.layer_new.exists():
            remove_tree(st.layer_new)
        atomic_write(entry / FROM_TRASH, entry.name + "\n")
        st.mark_layer_ready(entry, stack)
        self._note_layer_stack(tab)
        durable_rename(entry, st.layer_new)
        if stack != tab:
            if arm:
                self._arm_trial(stack, tab, reason, st.layer_id())
            st.write_roottab(stack)
        slot = self._swap_in_new_layer()
        self._forget_origin()
        return slot

    def _note_layer_stack(self, tab: list[str]) -> None:
        """The current layer remembers the stack it was used on, before it is set aside
        (``restore --undo`` puts it back with that stack)."""
        if self.store.layer.is_dir() and self.store.upper.is_dir():
            self.store.mark_layer_ready(self.store.layer, tab)

    def _forget_origin(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.store.layer / FROM_TRASH).unlink()
            fsync_dir(self.store.layer)

    def _return_to_trash(self) -> None:
        """An interrupted undo: layer.new goes back where it came from in trash/."""
        st = self.store
        try:
            name = (st.layer_new / FROM_TRASH).read_text().strip()
        except OSError:
            name = ""
        if not name or "/" in name or name.startswith(".") or (st.trash / name).exists():
            name = st.new_trash_slot(st.layer_id(st.layer_new)).name
        st.trash.mkdir(exist_ok=True)
        durable_rename(st.layer_new, st.trash / name)
        with contextlib.suppress(FileNotFoundError):
            (st.trash / name / FROM_TRASH).unlink()

    # ------------------------------------------------------------------ updates
    @changes_store
    def import_image(self, source: str, *, name: str | None = None, description: str = "",
                     sha256: str | None = None,
                     progress: ProgressFn | None = None) -> ImageMeta:
        """Add a root image built elsewhere (a squashfs file, ``-`` for stdin, or an
        http(s) URL) to the store as a full image; nothing else changes
        (maintenance/imports.py)."""
        from . import imports

        return imports.import_image(self, source, name=name, description=description,
                                    sha256=sha256, progress=progress)

    def compact_plan(self, first: str | None = None, last: str | None = None) -> Any:
        """The run of restore points ``ibi compact`` would merge (maintenance/compact.py);
        raises UsageError when there is none."""
        from . import compact

        return compact.plan(self, first, last)

    @changes_store
    def compact(self, *, first: str | None = None, last: str | None = None,
                name: str | None = None, description: str = "",
                compressor: str = squash.DEFAULT_COMPRESSOR, level: int | None = None,
                progress: ProgressFn | None = None) -> ImageMeta:
        """Merge a run of incremental restore points at the top of the active stack into
        one image, checked against the run file by file; the stack becomes the images
        below the run plus it (maintenance/compact.py). The run's images are kept."""
        from . import compact

        self.recover()
        return compact.compact(self, compact.plan(self, first, last), name=name or "",
                               description=description, compressor=compressor,
                               level=level, progress=progress)

    @changes_store
    def pin(self, name: str, pinned: bool = True) -> ImageMeta:
        """Pin (or unpin) image ``name``: a pinned image is never deleted by prune or
        delete (maintenance/retention.py)."""
        from . import retention

        return retention.pin(self, name, pinned)

    @changes_store
    def prune(self, *, dry_run: bool = False, keep_last: int | None = None,
              keep_days: int | None = None) -> Any:
        """Delete the restore points the retention policy does not keep
        (maintenance/retention.py); returns the plan it carried out."""
        from . import retention

        return retention.prune(self, dry_run=dry_run, keep_last=keep_last,
                               keep_days=keep_days)

    def holds_lock(self) -> bool:
        """Whether this engine is inside an action holding the store's lock."""
        return self._locked

    def reclaim(self) -> int:
        """Delete the writable layers that restore points cleared (their content is in an
        image); returns the bytes freed. Takes the store's lock only to move them aside."""
        return reclaim.reclaim(self)

    def reclaim_later(self) -> bool:
        """Start :meth:`reclaim` in the background (not in the initramfs); whether it did."""
        return reclaim.in_background(self)

    def trash_bytes(self) -> int:
        """What the set-aside layers hold (what purge would delete)."""
        self.store.require()
        return sum((tree_bytes(p) for p in self.store.trash_entries()), 0)

    @changes_store
    def purge(self) -> int:
        """Delete the layers set aside by Restore System and Roll back."""
        self.store.require()
        self._recover_or_go_on("the purge")
        freed = 0
        entries = self.store.trash_entries()
        for p in entries:
            freed += tree_bytes(p)
            remove_tree(p)
        if entries:
            fsync_dir(self.store.trash)  # "freed" holds after a power cut too
        freed += reclaim.reclaim(self)
        if freed:
            self._recover_or_go_on("the purge")  # with the space now free
        return freed

    # ------------------------------------------------------------------ mounts
    @changes_store
    def mount(self, target: str | os.PathLike[str], *, fallback: bool = False,
              readonly: bool = False) -> MountResult:
        """Assemble the root on ``target``: each image loop-mounted read-only, overlayfs
        with the writable layer as upper, the store's home/ bound on /home. With
        ``fallback``, a roottab that cannot be mounted gives way to roottab.prev.
        Holds the store's lock while it mounts: the overlay then keeps every action that
        changes the layer away (they check for it) until it is unmounted."""
        self.store.require()
        if not readonly:
            self._refuse_if_live()  # one overlay per writable layer (overlayfs's own rule)
        self._recover_or_go_on("the mount")
        if self.store.layer_new.exists() and not readonly:
            raise NoSpace("an interrupted Restore System or Roll back waits to be finished "
                          "(ibi recover), and the data partition is full",
                          hint="free space: ibi purge, ibi delete NAME; then ibi recover")
        st = self.store
        used = "roottab"
        try:
            tab = self._usable_stack(prev=False)
        except IbiError:
            if not fallback:
                raise
            log.warning("roottab unusable; falling back to roottab.prev")
            tab, used = self._usable_stack(prev=True), "roottab.prev"
        upper = None if readonly else st.upper
        return self._assemble(Path(target), tab, upper, used, review=False)

    def review(self, name: str, target: str | os.PathLike[str], *,
               tmpfs_size: str | None = None) -> MountResult:
        """Live Review: the stack up to ``name`` under a fresh tmpfs upper, /home on top.
        Nothing written there persists."""
        self.store.require()
        tab = list(self.stack_for(name))
        self._check_images(tab)
        size = review_tmpfs_bytes(tmpfs_size)
        return self._assemble(Path(target), tab, None, "review", review=True,
                              tmpfs_size=str(size))

    def umount(self, target: str | os.PathLike[str]) -> int:
        """Take down everything :meth:`mount` or :meth:`review` put up for ``target``;
        a mount ibi did not make there is left alone."""
        stage = mounts.stage_dir(self.run_dir, target)
        top = mounts.mount_at(target)
        staged = stage.exists() and bool(mounts.mounts_under(stage))
        if top is not None and not (top.fstype == "overlay" and top.source == "ibi"
                                    and staged):
            raise MountError(f"{target} is not mounted by ibi ({top.fstype} from "
                             f"{top.source}): left alone")
        if top is None and not stage.exists():
            raise MountError(f"nothing of ibi is mounted on {target}")
        n = mounts.umount_all([Path(target), stage] if top is not None else [stage])
        if stage.exists():
            shutil.rmtree(stage)
        return n

    def _usable_stack(self, prev: bool) -> list[str]:
        tab = self.store.read_roottab(prev=prev)
        for n in tab:
            if not self.store.has_image(n):
                which = "roottab.prev" if prev else "roottab"
                raise NotFound(f"{which} names image {n!r}, which is missing")
        self._check_images(tab)
        return tab

    def _check_images(self, tab: list[str]) -> None:
        """The initramfs's cheap check before a stack is mounted, top image first: each
        file's size is its metadata's, its squashfs superblock is sane."""
        for n in reversed(tab):
            meta = self.store.try_meta(n)
            why = squash.check_superblock(self.store.image_path(n), meta.size) \
                if meta else None
            if why:
                raise IntegrityError(f"image {n!r} refused: {why}",
                                     hint="ibi verify --all; roll back below it")

    def _assemble(self, target: Path, tab: list[str], upper: Path | None, used: str,
                  review: bool, tmpfs_size: str | None = None) -> MountResult:
        st = self.store
        if not target.is_dir():
            raise NotFound(f"mount point {target} does not exist")
        if mounts.is_mountpoint(target):
            raise InUse(f"{target} is already a mount point")
        stage = mounts.stage_dir(self.run_dir, target)
        if stage.exists() and mounts.mounts_under(stage):
            raise InUse(f"a stack for {target} is already staged in {stage}; ibi umount it")
        with mounts.mounting() as m:
            lowers = [m.image(st.image_path(n), stage / "lower" / str(i))
                      for i, n in enumerate(tab)]
            if review:
                m.tmpfs(stage / "tmpfs", tmpfs_size)
                (stage / "tmpfs" / "upper").mkdir()
                (stage / "tmpfs" / "work").mkdir()
                m.overlay(target, lowers[::-1], stage / "tmpfs" / "upper",
                          stage / "tmpfs" / "work")
            elif upper is not None:
                m.overlay(target, lowers[::-1], upper, st.work)
            else:
                m.overlay(target, lowers[::-1], readonly=True)
            home = self._home_in(target, writable=review or upper is not None)
            if home is not None:
                m.bind(st.home, home)
        return MountResult(str(target), tuple(tab), used,
                           "tmpfs" if review else str(upper or "read-only"), review)

    def _home_in(self, target: Path, writable: bool) -> Path | None:
        """Where the store's home/ is bound in an assembled root: its /home, a symbolic
        link followed inside the root (as the system will see it), never out of it; made
        when the images lack it and the root is writable, so that nothing written to
        /home ends up in the writable layer (it would be left out of restore points)."""
        home = operators.resolve(target, "/home")
        if home is None or not home.is_relative_to(target):
            log.warning("%s/home is a symbolic link that loops: home not bound", target)
            return None
        if not home.exists() and not home.is_symlink() and writable:
            with contextlib.suppress(OSError):
                home.mkdir(mode=0o755, parents=True)
        if home.is_dir() and not home.is_symlink():
            return home
        log.warning("%s has no /home directory%s; home not bound", target,
                    "" if writable else " (read-only)")
        return None

    @contextlib.contextmanager
    def _view(self, tab: list[str]) -> Iterator[Path]:
        """A read-only overlay of the writable layer over the stack: the whole system as
        it would boot, minus /home."""
        stage = self.run_dir / "stacks" / f"view-{os.getpid()}"
        try:
            with mounts.temporary_mounts() as m:
                lowers = [m.image(self.store.image_path(n), stage / "lower" / str(i))
                          for i, n in enumerate(tab)]
                layer = stage / "lower" / "layer"  # the upper, bound beside the images
                layer.mkdir(exist_ok=True)
                m.bind(self.store.upper, layer, readonly=True)
                view = stage / "view"
                view.mkdir(parents=True, exist_ok=True)
                m.overlay(view, [layer, *lowers[::-1]], readonly=True)
                yield view
        finally:  # the mounts are down (temporary_mounts): the directories go too
            if not mounts.mounts_under(stage):
                shutil.rmtree(stage, ignore_errors=True)

    def _mounted_images(self) -> set[str]:
        out = set()
        with contextlib.suppress(OSError):
            for dev in Path("/sys/block").glob("loop*/loop/backing_file"):
                out.add(dev.read_text().strip())
        return out

    def _live_overlay(self) -> str | None:
        """Where an overlay using the writable layer as its upper can be read from here, if
        there is one: its mount point in our mount namespace, else through
        ``/proc/PID/root`` in another one (the running system seen from a
        ``unshare --mount``, the menu's chroot, a second ``ibi mount``)."""
        for use in mounts.overlays_using(self.store.upper):
            return use.mountpoint if use.pid is None else \
                f"/proc/{use.pid}/root{use.mountpoint}"
        return None

    def _refuse_if_live(self) -> None:
        """Refuse to change the layer while an overlay, in any mount namespace, uses it."""
        uses = mounts.overlays_using(self.store.upper)
        if uses:
            raise InUse(f"busy: the writable layer is in use by the overlay on "
                        f"{uses[0].where()}",
                        hint="run this from Maintenance Mode, or queue it with --next-boot")

    # ------------------------------------------------------------------ helpers
    def _default_name(self, kind: Kind) -> str:
        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{'full' if kind is Kind.FULL else 'inc'}"

    def _check_depth(self, depth: int, boots: tuple[KernelRef, ...]) -> None:
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

    def _check_space(self, need: int, what: str) -> None:
        free = psutil.disk_usage(str(self.store.data)).free
        if need > free and reclaim.waiting(self):  # a cleared layer not yet deleted
            reclaim.reclaim(self)
            free = psutil.disk_usage(str(self.store.data)).free
        if need > free:
            from . import retention

            prune = retention.shortage_hint(self, need, free)
            raise NoSpace(f"not enough space to {what}: needs up to {human(need)}, "
                          f"{human(free)} free on {self.store.data}",
                          hint=f"{prune}; then try again (also ibi purge)" if prune
                          else "free space (ibi purge, ibi delete) and try again")

    def _copy(self, src: Path, dest: Path, progress: ProgressFn | None) -> None:
        total = src.stat().st_size
        done = 0
        with open(src, "rb") as fi, open(dest, "wb") as fo:
            while chunk := fi.read(1 << 20):
                fo.write(chunk)
                done += len(chunk)
                if progress:
                    progress(Progress("copying", done, total, src.name))

    def _commit_image(self, tmp: Path, name: str, kind: Kind, description: str,
                      stack: tuple[str, ...], parent: str | None, compressor: str,
                      progress: ProgressFn | None, source_layer: str | None = None,
                      source_stamp: int | None = None,
                      kernels: tuple[KernelRef, ...] = ()) -> ImageMeta:
        """fsync and check the squashed temp file, write its metadata, rename it in.

        The fsync runs in a thread while this one checks the superblock and reads the file
        for its sha256: the reading is done in the page cache, the very bytes the fsync
        writes, so the hashing overlaps the disk write instead of following it. Both are
        done before the metadata is written."""
        st = self.store
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

    def _keep_kernels(self, kplan: kernels.Plan) -> tuple[KernelRef, ...]:
        ks, warnings = kernels.collect(self.store, kplan)
        for w in warnings:
            log.warning("%s", w)
        return ks

    def _layer_touches_kernels(self) -> bool:
        """Whether the writable layer changes /boot or the kernel modules (the stack's
        kernels then need a look at the whole system)."""
        up = self.store.upper
        return any(os.path.lexists(up / d) for d in ("boot", *kernels.MODULE_DIRS))

    @contextlib.contextmanager
    def _image_tree(self, image: Path) -> Iterator[Path]:
        """A squashfs file mounted read-only, for a look inside."""
        where = self.run_dir / "stacks" / f"image-{os.getpid()}"
        try:
            with mounts.temporary_mounts() as m:
                yield m.image(image, where)
        finally:
            if not mounts.mounts_under(where):
                shutil.rmtree(where, ignore_errors=True)

    def _fresh_layer(self, carry: bool, new_stack: list[str] | None = None,
                     keep: Collection[str] = (), reason: str = "rollback", arm: bool = True
                     ) -> tuple[Path, list[str], list[str], list[str]]:
        """Swap in an empty writable layer (for ``new_stack``, written to roottab as the
        commit point, or for the current stack); the old one goes to trash/. With
        ``carry``, the managed config is rendered into the fresh layer first. Returns the
        old layer's new place, the paths written, the paths kept, and warnings."""
        st = self.store
        tab = st.read_roottab()
        target = tab if new_stack is None else new_stack
        if st.layer_new.exists():
            remove_tree(st.layer_new)
        st.make_layer(st.layer_new)
        written: list[str] = []
        kept: list[str] = []
        warnings: list[str] = []
        if carry:
            written, kept, warnings = self._render_state(tab, target, keep)
            fsync_tree(st.layer_new / "upper")
        st.mark_layer_ready(st.layer_new, target)
        self._note_layer_stack(tab)
        if target != tab:
            if arm:
                self._arm_trial(target, tab, reason, st.layer_id())
            st.write_roottab(target)
        return self._swap_in_new_layer(), written, kept, warnings

    def _render_state(self, tab: list[str], target: list[str],
                      keep: Collection[str]) -> tuple[list[str], list[str], list[str]]:
        """Write the managed config into ``layer.new``: through an overlay of ``target``'s
        images with the fresh layer as its upper, so each operator sees the system it
        writes for (its /etc/hosts, its zone database). The current system (``tab`` with
        the old layer) is read only for the paths in ``keep``."""
        st = self.store
        try:
            cfg = statemod.load_config(st)
        except StoreError as e:
            return [], [], [f"{e}: no managed config was written"]
        cap = statemod.latest(st)
        if cap is None and not keep:
            return [], [], []
        stage = self.run_dir / "stacks" / f"state-{os.getpid()}"
        try:
            with mounts.temporary_mounts() as m, \
                    (self._system(tab) if keep else contextlib.nullcontext()) as now:
                lowers = [m.image(st.image_path(n), stage / "lower" / str(i))
                          for i, n in enumerate(target)]
                fresh = stage / "fresh"
                fresh.mkdir(parents=True, exist_ok=True)
                m.overlay(fresh, lowers[::-1], st.layer_new / "upper", st.layer_new / "work")
                return statemod.apply(cfg, cap, fresh, now, keep)
        except (IbiError, OSError) as e:  # nothing is committed: the old layer stays
            raise StoreError(f"the saved settings could not be written into the fresh "
                             f"layer ({e}); nothing was changed",
                             hint="free space on the data partition (ibi purge), or see "
                             "ibi state list") from None
        finally:
            if not mounts.mounts_under(stage):
                shutil.rmtree(stage, ignore_errors=True)

    def home_in_layer(self) -> list[str]:
        """Files under /home that the writable layer holds (written while the store's home
        was not bound there): restore points leave /home out, so they would be lost."""
        home = self.store.upper / "home"
        if not home.is_dir() or home.is_symlink():
            return []
        out = []
        for e in sorted(os.scandir(home), key=lambda e: e.name):
            st = e.stat(follow_symlinks=False)
            if not layerfs.is_whiteout(st, e.path):
                out.append(e.name)
        return out

    def _rescue_home(self) -> str | None:
        """Move what the writable layer holds under /home into the store's home/ (in a
        directory ``ibi-rescued-STAMP``), before a restore point leaves /home out. Each
        entry is renamed (the same file system): a power cut leaves it in one place or the
        other. Returns where they went, or None."""
        names = self.home_in_layer()
        if not names:
            return None
        st = self.store
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

    def _clear_squashed_layer(self) -> None:
        """Empty the writable layer whose content an image named by roottab now holds. It
        needs no free space: the old layer is set aside (trash/*-squashed, never put back;
        deleted by :mod:`reclaim`) before the empty one is made (a power cut in between
        leaves no layer, and recovery makes the empty one)."""
        st = self.store
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

    def _swap_in_new_layer(self) -> Path:
        st = self.store
        slot = st.new_trash_slot(st.layer_id())
        if st.layer.exists():
            durable_rename(st.layer, slot)
        durable_rename(st.layer_new, st.layer)
        return slot


RAM_WARN = 0.80  # a RAM overlay this full is warned about (status, menu, journal)
RAM_CRITICAL = 0.95


def review_tmpfs_bytes(spec: str | None, meminfo: str | None = None) -> int:
    """The size of a Live Review's tmpfs, by the initramfs's own rule
    (:func:`bootplan.review_size_kib`: ``N%`` of the RAM, 1-90, or ``512M``/``2G``; None:
    half of the RAM available now; never under 64 MiB), with a warning when it is more
    than the RAM available. ``meminfo``: /proc/meminfo's text (for tests)."""
    text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    try:
        kib, why = bootplan.review_size_kib(spec, text)
    except UsageError as e:
        raise UsageError(f"bad tmpfs size: {e}") from None
    avail = bootplan.meminfo_kib(text).get("MemAvailable")
    if avail is not None and kib > avail:
        log.warning("the review's tmpfs (%s: %s) is larger than the RAM available now (%s):"
                    " filling it will push the system into swap or the OOM killer",
                    human(kib << 10), why, human(avail << 10))
    return kib << 10


def tmpfs_uppers(data_dir: Path | None = None) -> list[TmpfsUse]:
    """Every RAM file system (tmpfs, ramfs) that an overlay in this mount namespace writes
    to, with its use; also the data directory when it lives in RAM."""
    table = mounts.mountinfo()
    by_point = {m.mountpoint: m for m in table}

    def fs_of(path: str) -> str | None:
        p = os.path.realpath(path)
        while True:
            if p in by_point:
                return p
            if p == "/":
                return None
            p = os.path.dirname(p)

    seen: dict[str, str] = {}
    for m in table:
        if m.fstype == "overlay":
            for upper in mounts.option_values(m, "upperdir"):
                fs = fs_of(upper)
                if fs and by_point[fs].fstype in ("tmpfs", "ramfs"):
                    seen.setdefault(fs, m.mountpoint)
    if data_dir is not None:
        fs = fs_of(str(data_dir))
        if fs and by_point[fs].fstype in ("tmpfs", "ramfs"):
            seen.setdefault(fs, "")
    out = []
    for fs, serves in seen.items():
        with contextlib.suppress(OSError):
            u = os.statvfs(fs)
            total = u.f_blocks * u.f_frsize
            out.append(TmpfsUse(fs, total, total - u.f_bfree * u.f_frsize, serves))
    return out


def check_tries(n: int) -> int:
    if not 0 <= n <= MAX_TRIES:
        raise UsageError(f"boot tries are 0 (no trial) to {MAX_TRIES}, not {n}")
    return n


def fallback_text(fb: Fallback) -> str:
    """One line for the menu and ibi status: what the automatic fallback did."""
    at = fb.at.strftime("%Y-%m-%d %H:%M UTC")
    return (f"automatic fallback: stack [{' '.join(fb.failed)}] failed {fb.boots} boots "
            f"({fb.why}); back on [{' '.join(fb.good)}] at {at} (ibi restore --undo "
            "returns to it with its layer)")


def ram_notices(ram: RamUsage) -> list[Notice]:
    out = []
    for t in ram.tmpfs:
        what = f"the RAM overlay {t.mountpoint}" + (f" (upper of {t.serves})" if t.serves
                                                      else "")
        if t.fraction >= RAM_CRITICAL:
            out.append(Notice(Level.ERROR, f"{what} is {t.fraction:.0%} full "
                              f"({human(t.used)} of {human(t.total)}): writes fail when it "
                              "is full; keep what matters in /home"))
        elif t.fraction >= RAM_WARN:
            out.append(Notice(Level.WARNING, f"{what} is {t.fraction:.0%} full "
                              f"({human(t.used)} of {human(t.total)})"))
    return out


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
