"""Doubles for the menu's tests, the engine's side: an in-memory engine for the controller
(FakeEngine) and the real password over a temp system (password_system, shadow_line). The
views' side (rendering, status builders, the recording controller, the synchronous host) is in
tests/menu_doubles.py; the fake's managed state in tests/menu_fake_state.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from maintenance.auth import Auth, set_maintenance
from maintenance.compact import CompactPlan
from maintenance.errors import InUse, NotFound, StoreError, UsageError
from maintenance.model import (
    CaptureInfo,
    Change,
    Fallback,
    ImageMeta,
    Kind,
    LayerStats,
    Level,
    Notice,
    Progress,
    RegistryValue,
    RestoreResult,
    StatePlan,
    Status,
    Trial,
    UndoResult,
    VerifyItem,
    VerifyReport,
)
from tests.menu_doubles import T0, make_status, meta
from tests.menu_fake_state import MANAGED, REGISTRY, FakeState


class FakeEngine:
    """The engine's public API over in-memory state, with switches for failures."""

    def __init__(self, names: tuple[str, ...] = ("base", "apps"), *, broken: bool = False,
                 changes: int = 3) -> None:
        self.metas = {}
        for i, n in enumerate(names):
            kind = Kind.BASE if i == 0 else Kind.INCREMENTAL
            self.metas[n] = meta(n, kind, tuple(names[:i]), f"{n} description", day=i)
        self.tab = list(names)
        self.broken = broken
        self.layer = [Change(f"/etc/file{i}", "changed", 100) for i in range(changes)]
        self.calls: list[str] = []
        self.fail: dict[str, Exception] = {}
        self.kernels: dict[str, str] = {}  # image -> a kernel other than the running one
        self.next_entry: str | None = None
        self.state = FakeState()
        self.kept: tuple[str, ...] | None = None  # the keep_current of the last action
        self.restore_shown: LayerStats | None = None  # the figures restore was handed
        # set-aside layers, newest first: (trash entry, the stack it was used on, its paths)
        self.aside: list[tuple[str, list[str], list[Change]]] = []
        self.set_asides = 0
        self.tries = 3  # a changed stack is on trial for this many boots (0: no trial)
        self.on_trial: Trial | None = None
        self.boots = 0
        self.fallback: Fallback | None = None
        self.pinned: set[str] = set()
        self.max_depth = 16  # the policy's bound: a deeper stack gets the depth notice
        self.compacted: tuple[Any, ...] | None = None  # what the last compact was asked

    def _check(self, what: str) -> None:
        self.calls.append(what)
        if what in self.fail:
            raise self.fail[what]
        if self.broken:
            raise StoreError("/d holds no ibi store (.root_images/roottab is missing)")

    def status(self) -> Status:
        self._check("status")
        st = make_status(tuple(self.tab), others=tuple(n for n in self.metas
                                                      if n not in self.tab))
        notices = list(st.notices)
        t = self.on_trial
        if t:  # as Engine.status() reports them
            notices.append(Notice(Level.WARNING if self.boots else Level.INFO, "trial",
                                  {"boots": self.boots, "tries": t.tries, "good": list(t.good),
                                   "reason": t.reason, "failure": t.failure}))
        if self.fallback:
            fb = self.fallback
            notices.append(Notice(Level.WARNING, "fallback",
                                  {"failed": list(fb.failed), "good": list(fb.good),
                                   "boots": fb.boots, "at": fb.at, "why": fb.why}))
        if len(self.tab) > self.max_depth:
            notices.append(Notice(Level.INFO, "depth", {"depth": len(self.tab),
                                                        "bound": self.max_depth}))
        return dataclasses.replace(st, notices=tuple(notices), trial=t, boots=self.boots,
                                   fallback=self.fallback,
                                   pinned=tuple(n for n in self.metas if n in self.pinned))

    def _stats(self, changes: list[Change], path: str = "/d/layer/upper") -> LayerStats:
        return LayerStats(path, 300 * len(changes), len(changes), len(changes), 0, 0)

    def _set_aside(self) -> str:
        self.set_asides += 1
        entry = f"20261120-0930{self.set_asides:02}-layer"
        self.aside.insert(0, (entry, list(self.tab), self.layer))
        return entry

    def _switch(self, new: list[str], reason: str) -> None:
        """roottab becomes ``new``: on trial, falling back to the last good stack."""
        if new != self.tab:
            good = self.on_trial.good if self.on_trial else tuple(self.tab)
            self.on_trial = (Trial(tuple(new), good, self.tries, T0, reason)
                             if self.tries and tuple(new) != good else None)
            self.boots = 0
            self.fallback = None
        self.tab = new

    def trial(self) -> Trial | None:
        self._check("trial")
        return self.on_trial

    def undo_plan(self) -> tuple[str, list[str], LayerStats] | None:
        self._check("undo_plan")
        if not self.aside:
            return None
        entry, stack, changes = self.aside[0]
        return entry, list(stack), self._stats(changes, f"/d/trash/{entry}/upper")

    def undo(self) -> UndoResult:
        self._check("undo")
        if not self.aside:
            raise NotFound("no set-aside writable layer to put back (none was set aside, "
                           "or ibi purge deleted them)")
        entry, stack, changes = self.aside.pop(0)
        previous = list(self.tab)
        aside = self._set_aside()
        self.layer = changes
        self._switch(stack, "undo")
        return UndoResult(entry, tuple(stack), tuple(previous),
                          self._stats(changes), aside)

    def changes(self, limit: int | None = None) -> list[Change]:
        self._check("changes")
        return self.layer[:limit]

    def images(self) -> list[ImageMeta]:
        self._check("images")
        return [dataclasses.replace(m, pinned=m.name in self.pinned)
                for m in self.metas.values()]

    def roottab(self) -> list[str]:
        self._check("roottab")
        return list(self.tab)

    def review_kernel_switch(self, name: str) -> str | None:
        self._check("review_kernel_switch")
        return self.kernels.get(name)

    def boot_once(self, entry: str) -> None:
        self._check("boot_once")
        self.next_entry = entry

    def review_stack(self, name: str) -> tuple[str, ...]:
        self._check("review_stack")
        if name not in self.metas:
            raise NotFound(f"no image named {name!r} in the store")
        m = self.metas[name]
        return (*m.stack, name) if m.kind is Kind.INCREMENTAL else (name,)

    def restore_plan(self) -> LayerStats:
        self._check("restore_plan")
        return LayerStats("/d/layer/upper", 300 * len(self.layer), len(self.layer),
                          len(self.layer), 0, 0)

    def restore(self, keep_current: Collection[str] = (),
                discarded: LayerStats | None = None) -> RestoreResult:
        self._check("restore")
        self.restore_shown = discarded
        stats = discarded or self.restore_plan()
        res = self.state.renew(keep_current)
        self.kept = tuple(keep_current)
        entry = self._set_aside()
        self.layer = []
        return dataclasses.replace(res, discarded=stats, trash=f"/d/trash/{entry}")

    def state_plan(self, name: str | None = None) -> StatePlan:
        self._check("state_plan")
        if name is not None:
            self.review_stack(name)  # it exists
        return self.state.plan()

    def state_values(self) -> tuple[RegistryValue, ...]:
        self._check("state_values")
        values = self.state.values()
        return tuple(RegistryValue(key, values[key], op,
                                   tuple(p for p, o, _k in MANAGED if o == op), help_)
                     for key, (op, help_) in REGISTRY.items())

    def state_set(self, values: Mapping[str, str | None]) -> CaptureInfo:
        self._check("state_set")
        return self.state.set(values)

    def state_captures(self) -> tuple[CaptureInfo, ...]:
        self._check("state_captures")
        return tuple(self.state.captures)

    def create(self, kind: Kind, *, name: str | None = None, description: str = "",
               progress: Any = None, **_kw: Any) -> ImageMeta:
        self._check("create")
        if kind is Kind.INCREMENTAL and not self.layer:
            raise UsageError("the writable layer is empty: nothing to put in an incremental "
                             "restore point")
        for i in range(0, 101, 25):
            if progress:
                progress(Progress("squashing", i, 100, "x.sqfs"))
        name = name or f"point{len(self.metas)}"
        m = meta(name, kind, tuple(self.tab), description, day=5)
        self.metas[name] = m
        self.tab = [*self.tab, name] if kind is Kind.INCREMENTAL else [name]
        self.layer = []
        return m

    def reclaim_later(self) -> bool:
        self._check("reclaim_later")
        return False

    def rollback(self, name: str, keep_current: Collection[str] = ()) -> tuple[str, ...]:
        self._check("rollback")
        new = list(self.review_stack(name))
        self.state.renew(keep_current)
        self.kept = tuple(keep_current)
        self._set_aside()
        self._switch(new, "rollback")
        self.layer = []
        return tuple(self.tab)

    def delete_blocker(self, name: str) -> str | None:
        if name in self.tab:
            return f"{name!r} is in the active stack; roll back past it first"
        if name in self.pinned:
            return f"{name!r} is pinned (ibi unpin {name} first)"
        return None

    def delete(self, name: str) -> None:
        self._check("delete")
        reason = self.delete_blocker(name)
        if reason:
            raise InUse(reason)
        del self.metas[name]

    def queue(self, action: str, *, name: str | None = None, description: str = "",
              keep: Collection[str] = ()) -> None:
        self._check("queue")
        if action == "undo" and not self.aside:
            raise NotFound("no set-aside writable layer to put back")
        self.queued = (action, name, description)
        self.queued_keep = tuple(keep)

    def compact_plan(self, first: str | None = None, last: str | None = None
                     ) -> CompactPlan:
        """As maintenance/compact.py plans it, with its words."""
        self._check("compact_plan")
        tab = self.tab
        for given in (first, last):
            if given is not None and given not in tab:
                raise UsageError(f"{given!r} is not in the active stack ({' '.join(tab)})")
        if last is not None and last != tab[-1]:
            raise UsageError(f"a run ends at the top of the stack ({tab[-1]}), not at {last}")
        start = tab.index(first) if first is not None else 1
        if start == 0:
            raise UsageError(f"{tab[0]} is the bottom of the stack (a base or full image): "
                             "the run starts above it")
        run = tab[start:]
        for n in run:
            if self.metas[n].kind is not Kind.INCREMENTAL:
                raise UsageError(f"{n} is a {self.metas[n].kind.value} image: only "
                                 "incremental restore points are merged")
        if len(run) < 2:
            raise UsageError(f"nothing to compact: the run from {run[0] if run else tab[-1]} "
                             "to the top is one image" if run else
                             "nothing to compact: the stack is one image")
        return CompactPlan(tuple(tab), tuple(tab[:start]), tuple(run),
                           sum(self.metas[n].size for n in run))

    def compact(self, *, first: str | None = None, last: str | None = None,
                name: str | None = None, description: str = "", progress: Any = None,
                **_kw: Any) -> ImageMeta:
        self._check("compact")
        plan = self.compact_plan(first, last)
        self.compacted = (first, last, name, description)
        for phase, total in (("squashing", 100), ("checking", 40), ("verifying", 8 << 20)):
            if progress:
                progress(Progress(phase, total // 2, total, "x"))
        name = name or "20261120-093000-compact"
        if name in self.metas:
            raise UsageError(f"an image named {name!r} already exists")
        label = f"{plan.run[0]}..{plan.run[-1]}"
        m = meta(name, Kind.INCREMENTAL, plan.below, description
                 or f"compacts {label} ({len(plan.run)} restore points)", day=6,
                 size=plan.run_bytes)
        self.metas[name] = m
        self.tab = [*plan.below, name]
        if self.on_trial:
            self.on_trial = dataclasses.replace(self.on_trial, stack=tuple(self.tab))
        return m

    def verify(self, *, all_images: bool = False, progress: Any = None) -> VerifyReport:
        self._check("verify")
        if progress:
            progress(Progress("verifying", 1, 2, "base.sqfs"))
        return VerifyReport(tuple(VerifyItem(n, n != "bad", None if n != "bad" else
                                             "checksum mismatch: the image is corrupted")
                                  for n in self.metas))


def shadow_line(field: str) -> str:
    return f"root:{field}:20424:0:99999:7:::\n"


def password_system(tmp_path: Path, field: str | None = None, *,
                    maintenance: str | None = None, delay: float = 0.0) -> Auth:
    """The real engine side of the menu's password over a temp system: its root's
    ``etc/shadow`` holds root's password ``field`` (None: no shadow file, so no password),
    and its data directory the maintenance password when one is given."""
    root = tmp_path / "system"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if field is not None:
        (root / "etc" / "shadow").write_text(shadow_line(field)
                                             + "daemon:*:20424:0:99999:7:::\n")
    data = tmp_path / "auth-data"
    (data / ".root_images").mkdir(parents=True, exist_ok=True)
    auth = Auth(data, root=root, fail_delay=delay)
    if maintenance is not None:
        set_maintenance(auth.store, maintenance, ln=10)  # quick: a test, not a real secret
    return auth
