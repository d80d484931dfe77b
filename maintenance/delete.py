"""Freeing space: deleting an image (after every check of :func:`delete_blocker`) and
purging the writable layers that Restore System, Roll back and Undo set aside.

Functions of the :class:`~maintenance.engine.Engine`, which calls them (its methods hold
the store's lock).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from . import assemble, reclaim
from .errors import InUse, NotFound, StoreError
from .fsio import fsync_dir, remove_tree, tree_bytes
from .model import Kind
from .records import check_name

if TYPE_CHECKING:
    from .engine import Engine


def delete_blocker(eng: Engine, name: str) -> str | None:
    """Why image ``name`` cannot be deleted now, or None if it can."""
    st = eng.store
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
                name in eng.stack_for(queued["name"]):
            return (f"a roll back to {queued['name']!r} is queued for the next boot "
                    "(ibi pending --cancel first)")
    meta = st.try_meta(name)
    if meta is not None and meta.pinned:
        return f"{name!r} is pinned (ibi unpin {name} first)"
    t = eng.trial()
    if t is not None and name in t.good:
        return (f"{name!r} is in the stack the boot falls back to while "
                f"[{' '.join(t.stack)}] is on trial (ibi boot-ok --cancel first)")
    users = [m.name for m in eng.images()
             if m.kind is Kind.INCREMENTAL and name in m.stack and m.name != name]
    if users:
        return f"{name!r} is needed by {', '.join(users)}"
    if str(st.image_path(name)) in assemble.mounted_images(eng):
        return f"{name!r} is mounted (a live review?); unmount it first"
    return None


def delete(eng: Engine, name: str) -> None:
    """Delete an image that is neither in the stack, nor the boot fallback, nor
    depended upon, nor mounted."""
    eng._recover_or_go_on("the delete")
    st = eng.store
    reason = eng.delete_blocker(name)
    if reason:
        raise InUse(reason)
    for p in (st.image_path(name), st.meta_path(name)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    fsync_dir(st.root)
    eng._refresh_quietly()
    eng._recover_or_go_on("the delete")  # with the space now free


def purge(eng: Engine) -> int:
    """Delete the layers set aside by Restore System and Roll back."""
    eng.store.require()
    eng._recover_or_go_on("the purge")
    freed = 0
    entries = eng.store.trash_entries()
    for p in entries:
        freed += tree_bytes(p)
        remove_tree(p)
    if entries:
        fsync_dir(eng.store.trash)  # "freed" holds after a power cut too
    freed += reclaim.reclaim(eng)
    if freed:
        eng._recover_or_go_on("the purge")  # with the space now free
    return freed
