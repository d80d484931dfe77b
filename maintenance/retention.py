"""Pins and the retention policy: ``ibi pin``, ``ibi unpin`` and ``ibi prune``.

A pinned image (``pinned: true`` in its metadata) is never deleted by prune. Prune
deletes the restore points that the policy (``.root_images/policy``: ``keep_last``,
``keep_days``; docs/FORMAT.md) does not keep, and never one that something needs:

* pinned images, the base image (made by ibi init; only ibi delete removes it);
* the active stack (roottab), the boot fallback (roottab.prev), the last good stack of a
  boot trial, the stack of a roll back queued for the next boot;
* every image :meth:`Engine.delete_blocker` refuses (mounted by a Live Review, ...);
* the ``keep_last`` newest images (by ``created``) and every one younger than
  ``keep_days`` days;
* every image below a kept incremental (its ``stack``), and images whose metadata cannot
  be read (with what their damaged metadata still names below them).

Images are deleted one at a time through :meth:`Engine.delete` (crash-safe: it checks the
image again and renews the boot plan), an incremental before the images it sits on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Collection, Iterable
from datetime import datetime

from .engine import Engine
from .enginebase import changes_store
from .errors import IbiError, NoSpace, NotFound, StoreError, UsageError
from .fsio import load_yaml, read_store_text
from .model import ImageMeta, Kind
from .records import check_name, utcnow
from .status import human

log = logging.getLogger(__name__)

DAY = 86400


@dataclasses.dataclass(frozen=True)
class PruneItem:
    """One image as prune sees it, and why it goes or stays."""

    name: str
    size: int  # bytes of its image file (0 when the file is missing)
    reason: str  # e.g. "pinned", "one of the 5 newest", "needed by inc2"
    kind: str = ""  # base, full, incremental; "" when its metadata cannot be read
    created: datetime | None = None


@dataclasses.dataclass(frozen=True)
class PrunePlan:
    """What ``ibi prune`` deletes, in the order it deletes them (an incremental before
    the images below it, else oldest first), and what it keeps, with the reasons."""

    delete: tuple[PruneItem, ...]
    keep: tuple[PruneItem, ...]
    freed: int  # bytes: the images deleted and the kernels only they boot
    keep_last: int  # the policy applied
    keep_days: int
    kernels: tuple[str, ...] = ()  # kernel directories (boot/kernels/) freed with them

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.delete)


# ---------------------------------------------------------------------- pins

def pin(eng: Engine, name: str, pinned: bool = True) -> ImageMeta:
    """Pin (or unpin) image ``name``: its metadata is rewritten (atomically) with
    ``pinned``. Pinning a pinned image changes nothing. Unknown image: NotFound."""
    st = eng.store
    st.require()
    check_name(name)
    if not st.has_image(name) and not st.meta_path(name).exists():
        raise NotFound(f"no image named {name!r} in the store")
    meta = st.read_meta(name)  # unreadable metadata: StoreError (nothing to rewrite)
    if meta.pinned == pinned:
        return meta
    meta = dataclasses.replace(meta, pinned=pinned)
    st.write_meta(meta)
    log.info("%s %s", "pinned" if pinned else "unpinned", name)
    return meta


# ---------------------------------------------------------------------- the plan

def _check_count(value: int, what: str, policy: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        if policy:  # the file is wrong, not the command
            raise StoreError(f"policy: {what!r} must be 0 or more (not {value!r})",
                             hint="fix it, or give --keep-last and --keep-days")
        raise UsageError(f"{what} must be a whole number, 0 or more (not {value!r})")
    return value


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def _newest(n: int) -> str:
    return "the newest" if n == 1 else f"the {n} newest"


def policy_text(keep_last: int, keep_days: int) -> str:
    """The policy in words: "keep the 5 newest restore points and every one younger than
    30 days"."""
    parts = []
    if keep_last:
        parts.append(f"{_newest(keep_last)} restore point{'s' if keep_last != 1 else ''}")
    if keep_days:
        parts.append(f"every one younger than {_days(keep_days)}")
    if not parts:
        return "keep no restore point for its age or rank, only what must stay"
    return "keep " + " and ".join(parts)


def _damaged_needs(eng: Engine, name: str) -> list[str]:
    """The images a damaged metadata file still names below its image (its ``stack`` and
    ``parent``, read loosely), so that prune keeps them: it may be repaired by hand."""
    out: list[str] = []
    with contextlib.suppress(IbiError, OSError, ValueError):
        doc = load_yaml(read_store_text(eng.store.meta_path(name)))
        if isinstance(doc, dict):
            stack = doc.get("stack")
            for n in [*(stack if isinstance(stack, list) else []), doc.get("parent")]:
                if isinstance(n, str):
                    with contextlib.suppress(UsageError):
                        out.append(check_name(n))
    return out


def plan(eng: Engine, *, keep_last: int | None = None, keep_days: int | None = None,
         now: datetime | None = None) -> PrunePlan:
    """What prune would delete and keep, and why. ``keep_last``, ``keep_days``: the
    policy (default: ``policy``'s); ``now``: the time ages are counted from."""
    st = eng.store
    st.require()
    if keep_last is not None:
        _check_count(keep_last, "--keep-last")
    if keep_days is not None:
        _check_count(keep_days, "--keep-days")
    if keep_last is None or keep_days is None:
        policy = st.read_policy()
        if keep_last is None:
            keep_last = _check_count(policy.keep_last, "keep_last", policy=True)
        if keep_days is None:
            keep_days = _check_count(policy.keep_days, "keep_days", policy=True)
    now = now or utcnow()

    tab = st.read_roottab()  # unreadable: refuse (what is active is not known)
    prev: list[str] = []
    with contextlib.suppress(StoreError):  # as delete_blocker: no usable fallback
        prev = st.read_roottab(prev=True)
    trial = st.read_trial()  # unreadable: refuse, as its good stack is not known (the
    # engine takes it as no trial; ibi boot-ok --cancel forgets it)
    queued: tuple[str, tuple[str, ...]] | None = None
    with contextlib.suppress(StoreError):
        doc = st.read_pending()
        if doc and doc.get("action") == "rollback" and doc.get("name"):
            target = doc["name"]
            try:
                queued = (target, eng.stack_for(target))
            except IbiError:  # it cannot be assembled: keep what can still be told
                meta = st.try_meta(target)
                queued = (target, (*(meta.stack if meta else ()), target))

    metas: dict[str, ImageMeta] = {}  # present, with readable metadata
    reasons: dict[str, str] = {}  # kept -> why (the first reason that applies)
    damaged: list[str] = []
    for n in st.image_names():
        try:
            meta = st.read_meta(n)
        except NotFound:
            reasons[n] = f"no metadata ({n}.yaml is missing): only ibi delete removes it"
            continue
        except StoreError as e:
            reasons[n] = f"unreadable metadata, only ibi delete removes it ({e})"
            if st.has_image(n):
                damaged.append(n)
            continue
        if not st.has_image(n):
            reasons[n] = "its image file is missing: only ibi delete removes its metadata"
            continue
        metas[n] = meta

    def keep(names: Iterable[str], why: str) -> None:
        for n in names:
            if n in metas:
                reasons.setdefault(n, why)

    keep((n for n, m in metas.items() if m.pinned), "pinned")
    keep(tab, "in the active stack")
    keep(prev, "in roottab.prev (the boot fallback)")
    if trial is not None and list(trial.stack) == tab:  # else void (Engine.trial)
        keep(trial.good, "the last good stack (boot trial)")
    if queued is not None:
        keep(queued[1], f"a roll back to {queued[0]} is queued for the next boot")
    keep((n for n, m in metas.items() if m.kind is Kind.BASE),
         "the base image (made by ibi init): only ibi delete removes it")
    mounted = {str(p) for p in eng._mounted_images()}  # delete_blocker's own test
    keep((n for n in metas if str(st.image_path(n)) in mounted), "mounted (a live review?)")
    newest = sorted(metas.values(), key=lambda m: (m.created, m.name), reverse=True)
    keep((m.name for m in newest if m.created > now),  # a clock was wrong: keep it
         "created in the future (a wrong clock?)")
    keep((m.name for m in newest[:keep_last]),
         "the newest" if keep_last == 1 else f"one of the {keep_last} newest")
    keep((m.name for m in newest if (now - m.created).total_seconds() < keep_days * DAY),
         f"younger than {_days(keep_days)}")

    users: dict[str, list[str]] = {n: [] for n in metas}  # as delete_blocker counts them
    for m in metas.values():
        if m.kind is Kind.INCREMENTAL:
            for below in m.stack:
                if below in users and below != m.name:
                    users[below].append(m.name)

    def needs() -> None:
        """Keep whatever a kept incremental (or a damaged image) sits on."""
        for n in damaged:
            keep(_damaged_needs(eng, n), f"needed by {n}")
        changed = True
        while changed:
            changed = False
            for n in list(reasons):
                m = metas.get(n)
                if m is None or m.kind is not Kind.INCREMENTAL:
                    continue
                for below in m.stack:
                    if below in metas and below not in reasons:
                        reasons[below] = f"needed by {n}"
                        changed = True

    needs()
    blocked: dict[str, str | None] = {}
    while True:  # what the engine itself refuses to delete stays, with what it needs
        more = False
        for n in metas:
            if n in reasons:
                continue
            if n not in blocked:
                try:
                    why = eng.delete_blocker(n)
                except IbiError as e:  # (a queued roll back to a missing image, say)
                    why = f"cannot be checked: {e}"
                # "needed by": the incrementals above it go first (or it is kept by them)
                blocked[n] = None if why is None or " is needed by " in why else why
            why = blocked[n]
            if why:
                prefix = f"{n!r} is "
                reasons[n] = why[len(prefix):] if why.startswith(prefix) else why
                more = True
        if not more:
            break
        needs()

    doomed = {n for n in metas if n not in reasons}
    for n in doomed:
        m = metas[n]
        age = int((now - m.created).total_seconds() // DAY)
        parts = [f"{_days(age)} old"]
        if keep_last:
            parts.append("not the newest" if keep_last == 1
                         else f"not one of the {keep_last} newest")
        reasons[n] = ", ".join(parts)
    order: list[str] = []
    left = sorted(doomed, key=lambda n: (metas[n].created, n))
    while left:  # an incremental before the images below it, else oldest first
        n = next((n for n in left if not any(u in left for u in users[n])), left[0])
        order.append(n)
        left.remove(n)

    def item(n: str) -> PruneItem:
        m = metas.get(n)
        try:
            size = st.image_path(n).stat().st_size
        except OSError:
            size = 0
        return PruneItem(n, size, reasons[n], m.kind.value if m else "",
                         m.created if m else None)

    delete = tuple(item(n) for n in order)
    kept = sorted((n for n in reasons if n not in doomed),
                  key=lambda n: (n not in metas, metas[n].created if n in metas else now, n))
    kids, kbytes = _freed_kernels(eng, metas, doomed)
    return PrunePlan(delete, tuple(item(n) for n in kept),
                     sum(i.size for i in delete) + kbytes, keep_last, keep_days, kids)


def _freed_kernels(eng: Engine, metas: dict[str, ImageMeta],
                   doomed: Collection[str]) -> tuple[tuple[str, ...], int]:
    """The kernel directories that only the doomed images name (the engine deletes them
    after the images: kernelstore.gc), and their bytes."""
    st = eng.store
    still: set[str] = set()
    for n in st.image_names():
        if n in doomed:
            continue
        m = metas.get(n) or st.try_meta(n)
        if m is not None:
            still.update(k.id for k in m.kernels)
    rec = st.read_layer_kernels()
    if rec is not None and rec[0] == st.layer_id():
        still.update(k.id for k in rec[2])
    freed: dict[str, int] = {}
    for n in doomed:
        for k in metas[n].kernels:
            if k.id not in still and st.kernel_dir(k.id).is_dir():
                freed[k.id] = k.size
    return tuple(sorted(freed)), sum(freed.values())


# ---------------------------------------------------------------------- prune

@changes_store
def prune(eng: Engine, *, dry_run: bool = False, keep_last: int | None = None,
          keep_days: int | None = None,
          expect: Collection[str] | None = None) -> PrunePlan:
    """Delete what :func:`plan` does not keep, in its order, through
    :meth:`Engine.delete`; stop at the first failure, saying what was deleted. Holds the
    store's lock throughout. ``expect``: the names a user confirmed; if the plan now
    deletes any other image (the store changed meanwhile), nothing is deleted."""
    if not dry_run:
        try:  # finish an interrupted action first (a create rolled forward changes roottab)
            eng.recover()
        except NoSpace as e:  # prune frees space: it goes on (delete checks every image)
            log.warning("%s; going on with the prune", e)
    p = plan(eng, keep_last=keep_last, keep_days=keep_days)
    if dry_run or not p.delete:
        return p
    if expect is not None:
        confirmed = set(expect)
        extra = [n for n in p.names if n not in confirmed]
        if extra:
            raise StoreError(f"the store changed since the prune was confirmed: it would "
                             f"now also delete {', '.join(extra)}; nothing was deleted",
                             hint="run ibi prune again")
    done: list[str] = []
    for it in p.delete:
        try:
            eng.delete(it.name)
        except (IbiError, OSError) as e:
            what = str(e) if isinstance(e, IbiError) else (e.strerror or str(e))
            so_far = (f"deleted so far: {', '.join(done)}" if done
                      else "nothing was deleted")
            raise IbiError(f"prune stopped at {it.name}: {what}; {so_far}",
                           hint=e.hint if isinstance(e, IbiError) else None) from None
        done.append(it.name)
        log.info("pruned %s (%s)", it.name, it.reason)
    return p


# ---------------------------------------------------------------------- create's pre-flight

def describe(p: PrunePlan, limit: int = 4) -> str:
    """``4 restore points: a, b, c, d`` (the first ``limit`` names, then how many more)."""
    names = list(p.names)
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                        if len(names) > limit else "")
    return f"{len(names)} restore point{'s' if len(names) != 1 else ''}: {shown}"


def shortage_hint(eng: Engine, need: int, free: int | None = None) -> str | None:
    """For a create that lacks space (``need`` bytes; ``free`` bytes free now, read from
    the data partition by default): what ibi prune would free, or None when it would free
    nothing (or the plan cannot be made: the hint must never stop the refusal)."""
    try:
        p = plan(eng)
        if not p.delete:
            return None
        if free is None:
            import psutil

            free = psutil.disk_usage(str(eng.store.data)).free
    except (IbiError, OSError) as e:
        log.debug("no prune hint: %s", e)
        return None
    text = f"ibi prune would free {human(p.freed)} ({describe(p)})"
    if free + p.freed < need:
        text += ": not enough alone (also ibi purge, ibi delete NAME)"
    return text
