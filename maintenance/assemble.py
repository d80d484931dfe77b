"""Assembling stacks: the root on a mount point (ibi mount, Live Review, ibi umount), the
read-only views of the system that other actions look into, and the checks that keep a
stack from being mounted wrongly (a damaged image, a writable layer in use).

Functions of the :class:`~maintenance.engine.Engine`, which calls them (its methods hold
the store's lock where the action changes the store).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from . import bootplan, kernels, mounts, operators, squash
from .errors import IbiError, IntegrityError, InUse, MountError, NoSpace, NotFound, UsageError
from .model import MountResult
from .status import human

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("maintenance.engine")  # the engine's log, as before the split


@contextlib.contextmanager
def system(eng: Engine, tab: list[str] | None = None) -> Iterator[Path | None]:
    """The system as it is now, read-only: the running root when the writable layer
    is live, else the stack with its layer; None when it cannot be assembled."""
    live = live_overlay(eng)
    if live is not None:
        yield Path(live)
        return
    with contextlib.ExitStack() as stack:
        tree: Path | None = None
        try:
            tree = stack.enter_context(
                view(eng, tab if tab is not None else eng.store.read_roottab()))
        except (IbiError, OSError) as e:
            log.warning("the current system cannot be read: %s", e)
        yield tree


@contextlib.contextmanager
def view(eng: Engine, tab: list[str]) -> Iterator[Path]:
    """A read-only overlay of the writable layer over the stack: the whole system as
    it would boot, minus /home."""
    stage = eng.run_dir / "stacks" / f"view-{os.getpid()}"
    try:
        with mounts.temporary_mounts() as m:
            lowers = [m.image(eng.store.image_path(n), stage / "lower" / str(i))
                      for i, n in enumerate(tab)]
            layer = stage / "lower" / "layer"  # the upper, bound beside the images
            layer.mkdir(exist_ok=True)
            m.bind(eng.store.upper, layer, readonly=True)
            root = stage / "view"
            root.mkdir(parents=True, exist_ok=True)
            m.overlay(root, [layer, *lowers[::-1]], readonly=True)
            yield root
    finally:  # the mounts are down (temporary_mounts): the directories go too
        if not mounts.mounts_under(stage):
            shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def image_tree(eng: Engine, image: Path) -> Iterator[Path]:
    """A squashfs file mounted read-only, for a look inside."""
    where = eng.run_dir / "stacks" / f"image-{os.getpid()}"
    try:
        with mounts.temporary_mounts() as m:
            yield m.image(image, where)
    finally:
        if not mounts.mounts_under(where):
            shutil.rmtree(where, ignore_errors=True)


def mount(eng: Engine, target: str | os.PathLike[str], *, fallback: bool = False,
          readonly: bool = False) -> MountResult:
    """Assemble the root on ``target``: each image loop-mounted read-only, overlayfs
    with the writable layer as upper, the store's home/ bound on /home. With
    ``fallback``, a roottab that cannot be mounted gives way to roottab.prev.
    Holds the store's lock while it mounts: the overlay then keeps every action that
    changes the layer away (they check for it) until it is unmounted."""
    eng.store.require()
    if not readonly:
        refuse_if_live(eng)  # one overlay per writable layer (overlayfs's own rule)
    eng._recover_or_go_on("the mount")
    if eng.store.layer_new.exists() and not readonly:
        raise NoSpace("an interrupted Restore System or Roll back waits to be finished "
                      "(ibi recover), and the data partition is full",
                      hint="free space: ibi purge, ibi delete NAME; then ibi recover")
    st = eng.store
    used = "roottab"
    try:
        tab = _usable_stack(eng, prev=False)
    except IbiError:
        if not fallback:
            raise
        log.warning("roottab unusable; falling back to roottab.prev")
        tab, used = _usable_stack(eng, prev=True), "roottab.prev"
    upper = None if readonly else st.upper
    return _assemble(eng, Path(target), tab, upper, used, review=False)


def review(eng: Engine, name: str, target: str | os.PathLike[str], *,
           tmpfs_size: str | None = None) -> MountResult:
    """Live Review: the stack up to ``name`` under a fresh tmpfs upper, /home on top.
    Nothing written there persists."""
    eng.store.require()
    tab = list(eng.stack_for(name))
    check_images(eng, tab)
    size = review_tmpfs_bytes(tmpfs_size)
    return _assemble(eng, Path(target), tab, None, "review", review=True,
                     tmpfs_size=str(size))


def umount(eng: Engine, target: str | os.PathLike[str]) -> int:
    """Take down everything :meth:`mount` or :meth:`review` put up for ``target``;
    a mount ibi did not make there is left alone."""
    stage = mounts.stage_dir(eng.run_dir, target)
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


def _usable_stack(eng: Engine, prev: bool) -> list[str]:
    tab = eng.store.read_roottab(prev=prev)
    for n in tab:
        if not eng.store.has_image(n):
            which = "roottab.prev" if prev else "roottab"
            raise NotFound(f"{which} names image {n!r}, which is missing")
    check_images(eng, tab)
    return tab


def check_images(eng: Engine, tab: list[str]) -> None:
    """The initramfs's cheap check before a stack is mounted, top image first: each
    file's size is its metadata's, its squashfs superblock is sane."""
    for n in reversed(tab):
        meta = eng.store.try_meta(n)
        why = squash.check_superblock(eng.store.image_path(n), meta.size) \
            if meta else None
        if why:
            raise IntegrityError(f"image {n!r} refused: {why}",
                                 hint="ibi verify --all; roll back below it")


def _assemble(eng: Engine, target: Path, tab: list[str], upper: Path | None, used: str,
              review: bool, tmpfs_size: str | None = None) -> MountResult:
    st = eng.store
    if not target.is_dir():
        raise NotFound(f"mount point {target} does not exist")
    if mounts.is_mountpoint(target):
        raise InUse(f"{target} is already a mount point")
    stage = mounts.stage_dir(eng.run_dir, target)
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
        home = _home_in(eng, target, writable=review or upper is not None)
        if home is not None:
            m.bind(st.home, home)
    return MountResult(str(target), tuple(tab), used,
                       "tmpfs" if review else str(upper or "read-only"), review)


def _home_in(eng: Engine, target: Path, writable: bool) -> Path | None:
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


def mounted_images(eng: Engine) -> set[str]:
    out = set()
    with contextlib.suppress(OSError):
        for dev in Path("/sys/block").glob("loop*/loop/backing_file"):
            out.add(dev.read_text().strip())
    return out


def live_overlay(eng: Engine) -> str | None:
    """Where an overlay using the writable layer as its upper can be read from here, if
    there is one: its mount point in our mount namespace, else through
    ``/proc/PID/root`` in another one (the running system seen from a
    ``unshare --mount``, the menu's chroot, a second ``ibi mount``)."""
    for use in mounts.overlays_using(eng.store.upper):
        return use.mountpoint if use.pid is None else \
            f"/proc/{use.pid}/root{use.mountpoint}"
    return None


def refuse_if_live(eng: Engine) -> None:
    """Refuse to change the layer while an overlay, in any mount namespace, uses it."""
    uses = mounts.overlays_using(eng.store.upper)
    if uses:
        raise InUse(f"busy: the writable layer is in use by the overlay on "
                    f"{uses[0].where()}",
                    hint="run this from Maintenance Mode, or queue it with --next-boot")


def review_kernel_switch(eng: Engine, name: str) -> str | None:
    """The kernel a Live Review of ``name`` must boot when it is not the one running now
    and GRUB can boot it (a machine set up by ibi install); else None: the review can
    be assembled by the kernel that runs (the initramfs's decision)."""
    if not eng.store.bootloader_conf.is_file():
        return None
    ks = kernels.stack_kernels(eng.store, eng.stack_for(name))
    if not ks or ks[0].version == os.uname().release:
        return None
    return ks[0].version


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
