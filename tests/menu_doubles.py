"""Doubles for the views' side of the menu's tests: a helper that renders widgets to text rows,
the status builders (meta, entry, make_status, notice), a recording controller for the views
and a synchronous host for the controller. The in-memory engine is in tests/menu_fakes.py,
its managed state in tests/menu_fake_state.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import urwid

from maintenance.model import (
    DiskUsage,
    ImageMeta,
    Kind,
    LayerStats,
    Level,
    Notice,
    Progress,
    RamUsage,
    StackEntry,
    Status,
    TmpfsUse,
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
