"""The action queued for the next boot (``--next-boot``): for a running system whose
writable layer is in use, the boot path carries it out before it assembles the root.

Functions of the :class:`~maintenance.engine.Engine`, which calls them (its methods hold
the store's lock).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from . import state as statemod
from .bootrecords import MAX_TRIES
from .errors import NotFound, UsageError
from .model import Kind, ProgressFn
from .records import check_name, utcnow

if TYPE_CHECKING:
    from .engine import Engine


def check_tries(n: int) -> int:
    """``n`` when it is a valid number of boot tries, else UsageError."""
    if not 0 <= n <= MAX_TRIES:
        raise UsageError(f"boot tries are 0 (no trial) to {MAX_TRIES}, not {n}")
    return n


def queue(eng: Engine, action: str, *, name: str | None = None, description: str = "",
          keep: Collection[str] = (), reason: str | None = None,
          tries: int | None = None) -> None:
    """Queue Restore System ("restore") or a restore point ("incremental", "full") for
    the next boot, for a running system whose writable layer is in use. The boot path
    runs it (``run_pending``) before it assembles the root. Replaces any queued one.
    ``keep``: for a restore or roll back, the managed paths whose value at that time is
    kept (as ``keep_current``)."""
    eng.store.require()
    if action not in ("restore", "incremental", "full", "rollback", "undo"):
        raise UsageError(f"cannot queue {action!r}")
    if name is not None:
        check_name(name)
    if keep:
        if action not in ("restore", "rollback"):
            raise UsageError(f"a queued {action} keeps no config choices")
        statemod.check_choices(statemod.load_config(eng.store), keep)
        if any("," in k for k in keep):
            raise UsageError("a path to keep cannot contain a comma")
    if action == "undo" and eng.undo_plan() is None:
        raise NotFound("no set-aside writable layer to put back")
    if action == "rollback":
        if name is None:
            raise UsageError("a queued roll back needs the image to roll back to")
        eng.stack_for(name)  # it exists, and its stack can be assembled
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
    eng.store.write_pending(doc)
    eng.refresh_boot_files()  # the next boot's kernel is the one after the action


def cancel_pending(eng: Engine) -> bool:
    """Drop the queued action (also an unreadable one); whether there was one."""
    eng.store.require()
    had = eng.store.pending_path.exists()  # also an unreadable one: cancel it
    eng.store.clear_pending()
    eng.refresh_boot_files()
    return had


def run_pending(eng: Engine, progress: ProgressFn | None = None) -> str | None:
    """Carry out the queued action, if any, and clear it; return what was done."""
    doc = eng.pending()
    if doc is None:
        return None
    action = doc["action"]
    keep = [k for k in doc.get("keep", "").split(",") if k]
    if action == "restore":
        res = eng.restore(keep)
        done = f"restored: discarded {res.discarded.changed} changed files"
    elif action == "rollback":
        if doc.get("tries", "").isdigit():
            eng.trial_tries = check_tries(int(doc["tries"]))
        reason = doc.get("reason", "rollback")
        stack = eng.rollback(doc["name"], keep, reason=reason)
        done = f"{'switched' if reason == 'switch' else 'rolled back'}: the stack is " \
            f"{' '.join(stack)}"
    elif action == "undo":
        back = eng.undo()
        done = f"undone: the layer {back.put_back} is back on [{' '.join(back.stack)}]"
    else:
        kind = Kind.FULL if action == "full" else Kind.INCREMENTAL
        try:
            meta = eng.create(kind, name=doc.get("name"),
                              description=doc.get("description", ""), progress=progress)
            done = f"created {kind.value} restore point {meta.name}"
        except UsageError as e:  # e.g. the layer was already empty
            done = f"nothing done: {e}"
    eng.store.clear_pending()
    eng.refresh_boot_files()
    return done
