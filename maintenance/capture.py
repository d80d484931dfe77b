"""The managed config (maintenance/state.py) as the engine's actions use it: what is
captured and when, the values a capture holds, and what Restore System or Roll back
would write (each path's value now beside the value written).

Functions of the :class:`~maintenance.engine.Engine`, which calls them (its methods hold
the store's lock where the action changes the store).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import assemble
from . import state as statemod
from .errors import StoreError
from .model import CaptureInfo, RegistryValue, StatePlan

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("maintenance.engine")  # the engine's log, as before the split


def plan(eng: Engine, name: str | None = None,
         keep_current: Collection[str] = ()) -> StatePlan:
    """What Restore System (or Roll back to ``name``) writes into the fresh layer for
    each managed path, beside the value the system holds now."""
    eng.store.require()
    cfg = statemod.load_config(eng.store)
    statemod.check_choices(cfg, keep_current)
    if name is not None:
        eng.stack_for(name)
    cap = statemod.latest(eng.store)
    with assemble.system(eng) as now:
        upper = eng.store.upper if eng.store.upper.is_dir() else None
        return statemod.plan(cfg, cap, now, upper, keep_current)


def values(eng: Engine) -> tuple[RegistryValue, ...]:
    """The registry's keys, with the values of the last capture."""
    eng.store.require()
    return statemod.values(statemod.load_config(eng.store),
                           statemod.latest(eng.store))


def captures(eng: Engine) -> tuple[CaptureInfo, ...]:
    """The captures kept, newest first."""
    eng.store.require()
    cfg = statemod.load_config(eng.store)
    return tuple(statemod.info(c, cfg) for c in statemod.captures(eng.store))


def set_values(eng: Engine, values: Mapping[str, str | None]) -> CaptureInfo:
    """A new capture with ``values`` ("operator.field" -> value; None removes it)
    changed: what Restore System and Roll back write from now on. The running system
    is not changed."""
    eng.store.require()
    cfg = statemod.load_config(eng.store)
    statemod.ensure_config(eng.store)
    try:
        tab = eng.store.read_roottab()
    except StoreError:
        tab = []
    cap = statemod.set_values(eng.store, cfg, values, tab)
    return statemod.info(cap, cfg)


def save(eng: Engine, reason: str = "save") -> CaptureInfo | None:
    """Capture the managed state of the system as it is now (the running system, or
    the stack with its writable layer). None when nothing changed since the last
    capture. A stash path refused (a symlink) raises after the rest is captured."""
    eng.store.require()
    cfg = statemod.load_config(eng.store)
    statemod.ensure_config(eng.store)
    tab = eng.store.read_roottab()
    with assemble.system(eng, tab) as tree:
        if tree is None:
            raise StoreError("the system cannot be read (an image of the stack is "
                             "missing or damaged): nothing captured")
        cap, problems = statemod.capture(eng.store, cfg, tree, reason, tab)
    if problems:
        raise StoreError(problems[0], hint=(f"the other values were captured ({cap.id})"
                                            if cap else "the other values are unchanged"))
    return statemod.info(cap, cfg) if cap else None


def capture_quietly(eng: Engine, tree: Path, reason: str, stack: list[str]) -> None:
    """A capture that must not stop the action it belongs to (install, a restore
    point): a problem is logged."""
    try:
        cfg = statemod.load_config(eng.store)
        statemod.ensure_config(eng.store)
        _cap, problems = statemod.capture(eng.store, cfg, tree, reason, stack)
    except Exception as e:  # whatever it is, the action goes on
        problems = [str(e) or type(e).__name__]
    for p in problems:
        log.warning("state capture: %s", p)
