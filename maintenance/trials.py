"""Boot trials: a new stack is on trial until a boot of it completes; a boot that fails its
health checks is recorded; the initramfs falls back to the good stack when the tries are
used up (the fallback itself swaps layers: maintenance/restore.py).

Functions of the :class:`~maintenance.engine.Engine`, which calls them (its methods hold
the store's lock).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from .errors import StoreError
from .model import Fallback, Trial
from .records import utcnow

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("maintenance.engine")  # the engine's log, as before the split


def trial(eng: Engine) -> Trial | None:
    """The trial the active stack is on, or None (no trial, or one for another stack:
    roottab changed since)."""
    st = eng.store
    try:
        t = st.read_trial()
        tab = st.read_roottab()
    except StoreError as e:
        log.warning("%s", e)
        return None
    return t if t is not None and list(t.stack) == tab else None


def arm_trial(eng: Engine, new: list[str], tab: list[str], reason: str,
              good_layer: str | None) -> None:
    """Before roottab becomes ``new`` (its commit point): put ``new`` on trial. The
    stack to fall back to is the last good one: ``tab``, unless ``tab`` is itself on
    trial (then that trial's good stack). Written before the commit, a trial is void
    until roottab names its stack, so a power cut in between leaves no false trial."""
    st = eng.store
    try:
        tries = eng.trial_tries if eng.trial_tries is not None else \
            st.read_policy().boot_tries
    except StoreError as e:
        log.warning("%s: boots are counted %d times", e, 3)
        tries = 3
    old = eng.trial()
    good, layer = (list(old.good), old.good_layer) if old else (tab, good_layer)
    if tries <= 0 or good == new or not good:
        st.clear_trial()
        return
    st.clear_trial()
    st.write_trial(Trial(tuple(new), tuple(good), tries, utcnow(), reason, layer))


def boot_ok(eng: Engine) -> Trial | None:
    """Mark the active stack good: a boot of it completed (ibi-boot-ok.service, after
    boot-complete.target and its health checks). Returns the trial it ended."""
    eng.store.require()
    t = eng.trial()
    if t is None:
        if eng.store.trial_path.exists():  # a trial of another stack: void
            eng.store.clear_trial()
        return None
    eng.store.clear_trial()
    eng._refresh_quietly()
    return t


def cancel_trial(eng: Engine) -> Trial | None:
    """Forget the trial (the active stack is taken as good, no fallback)."""
    eng.store.require()
    try:
        t = eng.store.read_trial()
    except StoreError:
        t = None  # an unreadable one: forgotten all the same
    eng.store.clear_trial()
    eng._refresh_quietly()
    return t


def boot_failed(eng: Engine, why: str) -> tuple[Trial | None, int]:
    """Record that this boot of the active stack failed its health checks; returns the
    trial (None: the stack is not on trial) and the boots counted so far."""
    eng.store.require()
    t = eng.trial()
    if t is None:
        return None, 0
    why = " ".join(why.split())[:300]
    t = dataclasses.replace(t, failure=why)
    eng.store.write_trial(t)
    return t, eng.store.count_boots()


def last_fallback(eng: Engine) -> Fallback | None:
    """The last automatic fallback, while its good stack is still the active one."""
    try:
        fb = eng.store.read_fallback()
        tab = eng.store.read_roottab()
    except StoreError:
        return None
    return fb if fb is not None and list(fb.good) == tab else None
