"""Swapping the writable layer: Restore System (a fresh layer), Roll back and Switch (a
fresh layer on another stack), Undo and the automatic fallback (a set-aside layer put
back), with the managed config rendered into a fresh layer. A replaced layer is renamed
into trash/, never deleted here (``ibi purge`` deletes it; maintenance/delete.py).

Functions of the :class:`~maintenance.engine.Engine`, which calls them (its methods hold
the store's lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from . import assemble, mounts, trials
from . import layer as layerfs
from . import state as statemod
from .errors import IbiError, NotFound, StoreError
from .fsio import atomic_write, durable_rename, fsync_dir, fsync_tree, remove_tree
from .model import Fallback, LayerStats, RestoreResult, UndoResult
from .records import utcnow
from .store import FROM_TRASH

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("maintenance.engine")  # the engine's log, as before the split


def restore(eng: Engine, keep_current: Collection[str] = (),
            discarded: LayerStats | None = None) -> RestoreResult:
    """Restore System: set the writable layer aside (a rename, whatever its size) and
    put a fresh one in place, with the managed config rendered from the last capture
    (or, for the choices in ``keep_current``, kept as it is now). ``discarded``: the
    figures the caller showed before asking (:meth:`restore_plan`), else they are
    counted in the set-aside layer after the commit: nothing before the commit takes
    time in proportion to the layer."""
    eng.recover()
    assemble.refuse_if_live(eng)
    statemod.check_choices(statemod.load_config(eng.store), keep_current)
    trash, written, kept, warnings = _fresh_layer(eng, carry=True, keep=keep_current)
    eng._refresh_quietly()  # a kernel installed in the layer is gone with it
    if discarded is None:
        discarded = layerfs.stats(trash / "upper")
    return RestoreResult(discarded, str(trash), tuple(written), tuple(kept),
                         tuple(warnings))


def rollback(eng: Engine, name: str, keep_current: Collection[str] = (),
             reason: str = "rollback") -> tuple[str, ...]:
    """Make the stack end at ``name`` (ibi rollback, ibi switch: newer or other
    images are kept, to switch back with the same command), and set the writable layer
    aside, as its changes were made on another stack (``ibi restore --undo`` puts it
    back). The managed config is rendered into the fresh layer as for
    :meth:`restore`. The new stack is put on trial (:meth:`boot_ok`)."""
    eng.recover()
    new = eng.stack_for(name)
    for n in new:
        if not eng.store.has_image(n):
            raise NotFound(f"image {n!r} is missing")
    assemble.check_images(eng, list(new))
    assemble.refuse_if_live(eng)
    statemod.check_choices(statemod.load_config(eng.store), keep_current)
    *_, warnings = _fresh_layer(eng, carry=True, new_stack=list(new), keep=keep_current,
                                reason=reason)
    for w in warnings:
        log.warning("%s", w)
    eng.refresh_boot_files()
    return new


def undo_plan(eng: Engine) -> tuple[str, list[str], LayerStats] | None:
    """What ``restore --undo`` puts back: (trash entry, its stack, what it holds)."""
    eng.store.require()
    for p, _lid, stack in eng.store.set_aside_layers():
        return p.name, stack, layerfs.stats(p / "upper")
    return None


def undo(eng: Engine) -> UndoResult:
    """Put back the writable layer the last Restore System, Roll back, Switch or
    fallback set aside (the newest one in trash/), with the stack it was used on; the
    current layer is set aside in turn, so an undo can be undone."""
    eng.recover()
    st = eng.store
    assemble.refuse_if_live(eng)
    cands = st.set_aside_layers()
    if not cands:
        raise NotFound("no set-aside writable layer to put back (none was set aside, "
                       "or ibi purge deleted them)")
    entry, _lid, stack = cands[0]
    for n in stack:
        if not st.has_image(n):
            raise NotFound(f"the layer in {entry.name} was used on [{' '.join(stack)}],"
                           f" but image {n!r} is gone")
    assemble.check_images(eng, stack)
    tab = st.read_roottab()
    back = layerfs.stats(entry / "upper")
    aside = _put_back(eng, entry, stack, "undo")
    eng._refresh_quietly()
    return UndoResult(entry.name, tuple(stack), tuple(tab), back, aside.name)


def boot_fallback(eng: Engine) -> Fallback | None:
    """The initramfs, when the stack on trial has used up its boots: make the good
    stack the active one again, durably, with the writable layer it had (when it is
    still in trash/; else a fresh one with the saved settings). The failed stack's
    layer is set aside (undoable). Returns what was done, None when no fallback is
    due."""
    st = eng.store
    st.require()
    eng.recover()
    t = eng.trial()
    if t is None:
        return None
    boots = st.count_boots()
    if boots < t.tries:
        return None
    good = list(t.good)
    for n in good:
        if not st.has_image(n):
            raise NotFound(f"the good stack's image {n!r} is missing: no fallback")
    assemble.check_images(eng, good)
    assemble.refuse_if_live(eng)
    why = t.failure or f"{boots} boots did not complete"
    fb = Fallback(t.stack, t.good, boots, utcnow(), why)
    st.write_fallback(fb)  # shown while roottab is its good stack
    layers = {lid: p for p, lid, stack in st.set_aside_layers() if stack == good}
    if t.good_layer and t.good_layer in layers:
        _put_back(eng, layers[t.good_layer], good, "fallback", arm=False)
    else:
        _fresh_layer(eng, carry=True, new_stack=good, arm=False)
    st.clear_trial()
    eng._refresh_quietly()
    log.warning("stack [%s] failed %d boots (%s): back on [%s]", " ".join(t.stack),
                boots, why, " ".join(good))
    return fb


def _put_back(eng: Engine, entry: Path, stack: list[str], reason: str,
              arm: bool = True) -> Path:
    """Make trash ``entry`` the writable layer and ``stack`` roottab: the entry is
    renamed to layer.new (marked with where it came from: recovery returns it there
    until roottab names its stack), roottab written (the commit point, when the stack
    changes), then the swap. Returns where the replaced layer went."""
    st = eng.store
    tab = st.read_roottab()
    if st.layer_new.exists():
        remove_tree(st.layer_new)
    atomic_write(entry / FROM_TRASH, entry.name + "\n")
    st.mark_layer_ready(entry, stack)
    _note_layer_stack(eng, tab)
    durable_rename(entry, st.layer_new)
    if stack != tab:
        if arm:
            trials.arm_trial(eng, stack, tab, reason, st.layer_id())
        st.write_roottab(stack)
    slot = swap_in_new_layer(eng)
    forget_origin(eng)
    return slot


def _note_layer_stack(eng: Engine, tab: list[str]) -> None:
    """The current layer remembers the stack it was used on, before it is set aside
    (``restore --undo`` puts it back with that stack)."""
    if eng.store.layer.is_dir() and eng.store.upper.is_dir():
        eng.store.mark_layer_ready(eng.store.layer, tab)


def forget_origin(eng: Engine) -> None:
    """The writable layer is in place: drop the mark of the trash entry it came from."""
    with contextlib.suppress(FileNotFoundError):
        (eng.store.layer / FROM_TRASH).unlink()
        fsync_dir(eng.store.layer)


def return_to_trash(eng: Engine) -> None:
    """An interrupted undo: layer.new goes back where it came from in trash/."""
    st = eng.store
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


def _fresh_layer(eng: Engine, carry: bool, new_stack: list[str] | None = None,
                 keep: Collection[str] = (), reason: str = "rollback", arm: bool = True
                 ) -> tuple[Path, list[str], list[str], list[str]]:
    """Swap in an empty writable layer (for ``new_stack``, written to roottab as the
    commit point, or for the current stack); the old one goes to trash/. With
    ``carry``, the managed config is rendered into the fresh layer first. Returns the
    old layer's new place, the paths written, the paths kept, and warnings."""
    st = eng.store
    tab = st.read_roottab()
    target = tab if new_stack is None else new_stack
    if st.layer_new.exists():
        remove_tree(st.layer_new)
    st.make_layer(st.layer_new)
    written: list[str] = []
    kept: list[str] = []
    warnings: list[str] = []
    if carry:
        written, kept, warnings = _render_state(eng, tab, target, keep)
        fsync_tree(st.layer_new / "upper")
    st.mark_layer_ready(st.layer_new, target)
    _note_layer_stack(eng, tab)
    if target != tab:
        if arm:
            trials.arm_trial(eng, target, tab, reason, st.layer_id())
        st.write_roottab(target)
    return swap_in_new_layer(eng), written, kept, warnings


def _render_state(eng: Engine, tab: list[str], target: list[str],
                  keep: Collection[str]) -> tuple[list[str], list[str], list[str]]:
    """Write the managed config into ``layer.new``: through an overlay of ``target``'s
    images with the fresh layer as its upper, so each operator sees the system it
    writes for (its /etc/hosts, its zone database). The current system (``tab`` with
    the old layer) is read only for the paths in ``keep``."""
    st = eng.store
    try:
        cfg = statemod.load_config(st)
    except StoreError as e:
        return [], [], [f"{e}: no managed config was written"]
    cap = statemod.latest(st)
    if cap is None and not keep:
        return [], [], []
    stage = eng.run_dir / "stacks" / f"state-{os.getpid()}"
    try:
        with mounts.temporary_mounts() as m, \
                (assemble.system(eng, tab) if keep else contextlib.nullcontext()) as now:
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


def swap_in_new_layer(eng: Engine) -> Path:
    """Set the writable layer aside in trash/ and put ``layer.new`` in its place; returns
    where the old one went."""
    st = eng.store
    slot = st.new_trash_slot(st.layer_id())
    if st.layer.exists():
        durable_rename(st.layer, slot)
    durable_rename(st.layer_new, st.layer)
    return slot
