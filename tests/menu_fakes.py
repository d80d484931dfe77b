"""Doubles for the menu's tests: a recording controller for the views, an in-memory engine
for the controller, a synchronous host, and a helper that renders widgets to text rows."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import urwid

from maintenance.auth import Auth, set_maintenance
from maintenance.compact import CompactPlan
from maintenance.errors import InUse, NotFound, StoreError, UsageError
from maintenance.model import (
    CaptureInfo,
    Change,
    DiskUsage,
    Fallback,
    ImageMeta,
    Kind,
    LayerStats,
    Level,
    Notice,
    Progress,
    RamUsage,
    RegistryValue,
    RestoreResult,
    StackEntry,
    StateItem,
    StatePlan,
    Status,
    TmpfsUse,
    Trial,
    UndoResult,
    VerifyItem,
    VerifyReport,
)

GiB = 1 << 30
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def rows(widget: urwid.Widget, size: tuple[int, ...], focus: bool = True) -> list[str]:
    """The rendered text rows of ``widget`` at ``size`` (box: (cols, rows); flow: (cols,))."""
    return [r.decode("utf-8") for r in widget.render(size, focus=focus).text]


def screen_text(widget: urwid.Widget, size: tuple[int, ...]) -> str:
    return "\n".join(rows(widget, size))


def meta(name: str, kind: Kind = Kind.INCREMENTAL, stack: tuple[str, ...] = (),
         desc: str = "", size: int = 4 << 20, day: int = 0) -> ImageMeta:
    return ImageMeta(name=name, kind=kind, created=T0 + timedelta(days=day),
                     sha256="0" * 64, size=size, description=desc,
                     parent=stack[-1] if stack else None, stack=stack)


def entry(m: ImageMeta, problem: str | None = None) -> StackEntry:
    return StackEntry(m.name, m.kind, m.created, m.size, m.description, m.parent,
                      present=problem != "image file is missing", chain_ok=problem is None,
                      problem=problem)


def make_status(names: tuple[str, ...] = ("base", "apps", "tuned"), *,
                problem: dict[str, str] | None = None, notices: tuple[Notice, ...] = (),
                free: int = 80 * GiB, tmpfs: bool = False, others: tuple[str, ...] = ()
                ) -> Status:
    problem = problem or {}
    metas = []
    for i, n in enumerate(names):
        kind = Kind.BASE if i == 0 else Kind.INCREMENTAL
        metas.append(meta(n, kind, tuple(names[:i]), f"{n} description", day=i))
    stack = tuple(entry(m, problem.get(m.name)) for m in metas)
    other = tuple(entry(meta(n, Kind.FULL, desc="set aside", day=9)) for n in others)
    layer = LayerStats("/d/layer/upper", 70 << 20, 42, 37, 5, 1)
    disk = DiskUsage(total=100 * GiB, used=100 * GiB - free, free=free, store=12 << 20,
                     layer=70 << 20, trash=0)
    ram = RamUsage(16 * GiB, 12 * GiB,
                   (TmpfsUse("/run/ibi/stacks/x/tmpfs", 8 * GiB, 1 * GiB),) if tmpfs else ())
    return Status("/d", stack, other, layer, disk, ram, notices)


class RecordingController:
    """Stands in for the controller under a view: records each call by name."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args: Any) -> None:
            self.calls.append(name)
        return record


# the managed paths of the fake: (path, operator, registry key; "" for stash and reference)
MANAGED: tuple[tuple[str, str, str], ...] = (
    ("/etc/hostname", "hostname", "hostname.name"),
    ("/etc/hosts", "hostname", "hostname.name"),
    ("/etc/timezone", "timezone", "timezone.zone"),
    ("/etc/machine-id", "machine-id", "machine-id.id"),
    ("/etc/ssh/ssh_host_ed25519_key", "stash", ""),
    ("/etc/issue", "reference", ""),
)
REGISTRY: dict[str, tuple[str, str]] = {  # key -> (operator, help)
    "hostname.name": ("hostname", "the host name: letters, digits and '-', 1 to 63"),
    "timezone.zone": ("timezone", "an IANA time zone, e.g. Europe/Berlin"),
    "machine-id.id": ("machine-id", "32 lower-case hex digits"),
}
IMAGE_FILES = {"/etc/hostname": "debian", "/etc/hosts": "127.0.1.1 debian",
               "/etc/timezone": "Etc/UTC", "/etc/machine-id": "(empty)",
               "/etc/ssh/ssh_host_ed25519_key": "(absent)",
               "/etc/issue": "Debian GNU/Linux 13"}
MACHINE_ID = "0123456789abcdef0123456789abcdef"


def rendered(path: str, value: str) -> str:
    """A registry value as its file shows it (one line)."""
    return f"127.0.1.1 {value}" if path == "/etc/hosts" else value


def invalid(now: str) -> bool:
    return now in ("(deleted)", "(empty)") or now.startswith("unparsable")


class FakeState:
    """The managed state of the fake engine: captures (newest first), stashed files, and the
    files as the system holds them now (one-line values, as ``StateItem.now`` shows them)."""

    def __init__(self, *, captured: bool = True) -> None:
        self.captures: list[CaptureInfo] = []
        self.stash: dict[str, str] = {}
        values = {"hostname.name": "web01", "timezone.zone": "Europe/Berlin",
                  "machine-id.id": MACHINE_ID}
        if captured:
            self.stash["/etc/ssh/ssh_host_ed25519_key"] = "sha256 1a2b3c4d"
            self.capture("boot", values)
        self.now = {path: self.written(path)[0] for path, _op, _key in MANAGED}
        self.warnings: tuple[str, ...] = ()  # what a restore could not write

    def values(self) -> dict[str, str | None]:
        last = self.captures[0] if self.captures else None
        got = {v.key: v.value for v in last.values} if last else {}
        return {key: got.get(key) for key in REGISTRY}

    def capture(self, reason: str, values: Mapping[str, str | None]) -> CaptureInfo:
        made = T0 + timedelta(hours=len(self.captures))
        info = CaptureInfo(
            id=made.strftime("%Y%m%dT%H%M%SZ") + f"-{reason}", created=made, reason=reason,
            stack=("base", "apps"),
            values=tuple(RegistryValue(key, values.get(key), op,
                                       tuple(p for p, o, _k in MANAGED if o == op), help_)
                         for key, (op, help_) in REGISTRY.items()),
            stashed=tuple(self.stash), notes=())
        self.captures.insert(0, info)
        return info

    def written(self, path: str) -> tuple[str, str]:
        """What a fresh layer gets at ``path``, and from where."""
        key = dict((p, k) for p, _o, k in MANAGED)[path]
        last = self.captures[0] if self.captures else None
        value = self.values().get(key) if key else self.stash.get(path)
        if last is None or value is None or path == "/etc/issue":
            return IMAGE_FILES[path], "the image"
        return rendered(path, value), f"capture {last.id}"

    def plan(self) -> StatePlan:
        last = self.captures[0] if self.captures else None
        items = []
        for path, op, key in MANAGED:
            now = self.now[path]
            written, source = self.written(path)
            changed = written != now
            items.append(StateItem(
                path, op, choice=op if key else (path if op == "stash" else ""), now=now,
                now_valid=not invalid(now), written=written, source=source,
                changed=changed,
                can_keep=changed and not invalid(now) and op != "reference"))
        return StatePlan(last.id if last else None, last.created if last else None,
                         tuple(items))

    def renew(self, keep: Collection[str]) -> RestoreResult:
        """A fresh layer: every managed path written, but those whose choice is kept."""
        plan = self.plan()
        for c in keep:
            if c not in plan.choices:
                raise UsageError(f"cannot keep {c!r}: not one of {', '.join(plan.choices)}")
        kept = tuple(i.path for i in plan.items if i.choice in keep)
        written = tuple(i.path for i in plan.items
                        if i.path not in kept and i.operator != "reference")
        for i in plan.items:
            if i.path not in kept:
                self.now[i.path] = i.written
        return RestoreResult(LayerStats("/d/layer/upper", 0, 0, 0, 0, 0), "/d/trash/1",
                             written, kept, self.warnings)

    def set(self, values: Mapping[str, str | None]) -> CaptureInfo:
        for key, value in values.items():
            if key not in REGISTRY:
                raise UsageError(f"no setting {key!r}: one of {', '.join(REGISTRY)}")
            if key == "hostname.name" and value is not None and not re.fullmatch(
                    r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", value):
                raise UsageError(f"hostname.name: {value!r} is not a host name "
                                 "(letters, digits and '-', 1 to 63)")
        return self.capture("set", {**self.values(), **values})


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


class SyncHost:
    """The controller's host without urwid's loop: views stack up in a list, background
    work runs at once, the shell is a no-op, exit records the code."""

    def __init__(self) -> None:
        self.views: list[urwid.Widget] = []
        self.dialog_widget: urwid.Widget | None = None
        self.exit_code: int | None = None
        self.progress: list[Any] = []
        self.shells = 0

    @property
    def top(self) -> urwid.Widget:
        return self.dialog_widget if self.dialog_widget is not None else self.views[-1]

    def show(self, view: urwid.Widget) -> None:
        self.views.append(view)

    def home(self, view: urwid.Widget) -> None:
        self.views = [view]
        self.dialog_widget = None

    def back(self) -> None:
        if len(self.views) > 1:
            self.views.pop()

    def dialog(self, widget: urwid.Widget) -> None:
        self.dialog_widget = widget

    def close_dialog(self) -> None:
        self.dialog_widget = None

    def run_background(self, work: Any, on_progress: Any, on_done: Any) -> None:
        def report(p: Progress) -> None:
            self.progress.append(p)
            on_progress(p, 0.0)
        try:
            result, exc = work(report), None
        except Exception as e:
            result, exc = None, e
        on_done(result, exc)

    def run_shell(self) -> str:
        self.shells += 1
        return "/bin/sh exited with status 0"

    def exit(self, code: int) -> None:
        self.exit_code = code

    def text(self, size: tuple[int, int] = (80, 22)) -> str:
        view = self.views[-1]
        if self.dialog_widget is not None:
            view = urwid.Overlay(self.dialog_widget, view, "center",
                                 getattr(self.dialog_widget, "width", 60), "middle", "pack")
        return screen_text(view, size)

    def press(self, *keys: str, size: tuple[int, int] = (80, 22)) -> None:
        """Send keys to the top widget as urwid's loop would (unhandled Esc goes back)."""
        for key in keys:
            top = self.top
            wsize = (getattr(top, "width", 60),) if top is self.dialog_widget else size
            left = top.keypress(wsize, key)
            if left == "esc" and self.dialog_widget is None:
                self.back()


def notice(level: Level, msg: str) -> Notice:
    """A notice whose words are ``msg`` (the code whose words are its data's error)."""
    return Notice(level, "roottab-unusable", {"error": msg})


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
