"""The main screen: the image stack, the writable layer, notices, disk use and the actions
(Continue first); and what it opens in place: the Details page (w) and the help (?). Its
words are here; ``main.MainController`` hands it the store's status."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import urwid

from maintenance.errors import IbiError
from maintenance.model import Change, Level, Notice, StackEntry, Status

from .notice_words import Said, first_lines, menu_text, other_lines
from .views import Bar, Dialog, Line, Page
from .widgets import ButtonRow, MenuItem, Size, Wrap, box_size, date, human, plural


class MainActions(Protocol):
    """What the main view calls: one method per menu entry (the controller implements it)."""

    def continue_boot(self) -> None: ...
    def restore(self) -> None: ...
    def undo(self) -> None: ...
    def create_full(self) -> None: ...
    def create_incremental(self) -> None: ...
    def live_review(self) -> None: ...
    def rollback(self) -> None: ...
    def delete(self) -> None: ...
    def compact(self) -> None: ...
    def state(self) -> None: ...
    def verify(self) -> None: ...
    def shell(self) -> None: ...
    def reboot(self) -> None: ...
    def poweroff(self) -> None: ...
    def details(self) -> None: ...
    def help(self) -> None: ...


# (controller method, label, hotkey); the order is the menu's order, Continue first
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("continue_boot", "Continue booting", "c"),
    ("restore", "Restore System", "r"),
    ("undo", "Undo Restore / Roll back", "u"),
    ("create_full", "Create Full Restore Point", "f"),
    ("create_incremental", "Create Incremental Restore Point", "i"),
    ("live_review", "Live Review...", "l"),
    ("rollback", "Roll back to...", "b"),
    ("delete", "Delete restore point...", "d"),
    ("compact", "Compact restore points", "k"),
    ("state", "Saved settings (state)...", "t"),
    ("verify", "Verify images", "v"),
    ("shell", "Shell", "s"),
    ("reboot", "Reboot", "e"),
    ("poweroff", "Power off", "o"),
)
ALL_ACTIONS = tuple(a[0] for a in ACTIONS)
# what a broken or missing store still offers
RESCUE_ACTIONS = ("continue_boot", "restore", "rollback", "shell", "reboot", "poweroff")
# what a disabled action's entry says instead of its label (its hotkey still tells why)
DISABLED_LABELS = {"undo": "Undo: nothing to undo"}

MAIN_FOOTER = " Up/Down Enter: choose  letter: shortcut  w: what changed  ?: help"


# ---------------------------------------------------------------------------- main view

def _cells(num: str, name: str, kind: str, created: str, size: str, desc: str,
           attr: str | None = None) -> urwid.Widget:
    def t(s: str) -> urwid.Text:
        return urwid.Text((attr, s) if attr else s, wrap="clip")
    return urwid.Columns([(2, t(num)), (20, t(name)), (11, t(kind)), (17, t(created)),
                          (9, t(size)), t(desc)], dividechars=1)


def stack_rows(status: Status) -> list[urwid.Widget]:
    """The stack bottom first, the writable layer on top of it, problems flagged in place."""
    rows: list[urwid.Widget] = []
    below: str | None = None
    pinned = set(status.pinned)
    for i, e in enumerate(status.stack, 1):
        rows.extend(_entry_rows(str(i), e, e.name in pinned))
        if e.kernels and e.kernels[0] != below:  # where the booted kernel changes
            rows.append(urwid.Text(("dim", f"   boots Linux {e.kernels[0]}"), wrap="clip"))
            below = e.kernels[0]
    lay = status.layer
    what = (f"{human(lay.bytes)} in {plural(lay.changed, 'changed file')}, "
            f"{lay.deleted} deleted"
            if lay is not None else "missing (recreated empty on the next mount)")
    rows.append(urwid.Columns([(2, urwid.Text("+")), (20, urwid.Text("writable layer")),
                               urwid.Text(("info" if lay else "warning", what), wrap="clip")],
                              dividechars=1))
    if status.layer_kernels:
        rows.append(urwid.Text(("warning", f"   Linux {status.layer_kernels[0]} installed in the "
                                "layer: booted next; Restore discards it"), wrap="clip"))
    if status.other_images:
        names = ", ".join(e.name + ("!" if e.problem else "")
                          + (" (pinned)" if e.name in pinned else "")
                          for e in status.other_images)
        rows.append(urwid.Text(("dim", f"   not in the stack: {names}"), wrap="clip"))
    return rows


def _entry_rows(num: str, e: StackEntry, pinned: bool = False) -> list[urwid.Widget]:
    attr = "error" if e.problem else None
    kind = e.kind.value if e.kind else "?"
    desc = ("[pinned] " if pinned else "") + e.description  # first: the column is narrow
    rows = [_cells(num, ("! " if e.problem else "") + e.name, kind, date(e.created),
                   human(e.size) if e.present else "missing", desc, attr)]
    if e.problem:
        rows.append(urwid.Text(("error", f"   ! {e.problem}")))
    return rows


def disk_rows(status: Status, low: bool) -> list[urwid.Widget]:
    d = status.disk

    def row(label: str, frac: float | None, fig: str, attr: str = "bar") -> urwid.Widget:
        return urwid.Columns([(7, urwid.Text(label)), (19, urwid.Text(fig, wrap="clip")),
                              ("weight", 1, Bar(frac, attr, max_width=40))])

    tot = d.total or 1
    rows = [urwid.Text(("title", "Data partition")),
            row("used", d.used / tot, f"{human(d.used)}/{human(d.total)}",
                "barlow" if low else "bar"),
            row("free", d.free / tot, human(d.free), "barlow" if low else "bar"),
            row("layer", d.layer / tot, human(d.layer)),
            row("images", d.store / tot, human(d.store))]
    if d.trash:
        rows.append(row("trash", d.trash / tot, human(d.trash)))
    ram = status.ram
    if ram.tmpfs:
        rtot = ram.total or 1
        rows.append(row("RAM", (ram.total - ram.available) / rtot,
                        f"{human(ram.total - ram.available)}/{human(ram.total)}"))
        for t in ram.tmpfs:
            rows.append(row("tmpfs", t.used / (t.total or 1), f"{human(t.used)}/{human(t.total)}"))
    return rows


MARK = {Level.ERROR: ("error", "!! "), Level.WARNING: ("warning", " ! "),
        Level.INFO: ("info", " i ")}


def notice_rows(notices: Sequence[Said], limit: int,
                first: Sequence[Said] = ()) -> list[urwid.Widget]:
    """``first`` (always shown), then up to ``limit`` rows in all of ``notices``, errors
    first, and how many more the Details page (w) has."""
    order = sorted(notices, key=lambda n: (n.level is not Level.ERROR,
                                           n.level is not Level.WARNING))
    limit = max(1, limit - len(first))
    rows: list[urwid.Widget] = [urwid.Text((MARK[n.level][0], MARK[n.level][1] + n.text))
                                for n in (*first, *order[:limit])]
    if len(order) > limit:
        rows.append(urwid.Text(("dim", f"    ... {len(order) - limit} more: press w")))
    return rows


class MainView(Wrap):
    """The stack, the writable layer, notices, disk use and the actions (Continue first)."""

    footer = MAIN_FOOTER

    def __init__(self, controller: MainActions, status: Status | None, *,
                 problem: str | None = None, actions: Sequence[str] = ALL_ACTIONS,
                 low_space: bool = False, boot_error: str | None = None,
                 notice_limit: int = 3, disabled: Collection[str] = ()) -> None:
        self.controller = controller
        # a disabled action keeps its hotkey: the controller says why it cannot run
        self.items = [MenuItem(DISABLED_LABELS.get(method, label) if method in disabled
                               else label, getattr(controller, method), key,
                               enabled=method not in disabled)
                      for method, label, key in ACTIONS if method in actions]
        self.hotkeys = {key: getattr(controller, method)
                        for method, _label, key in ACTIONS if method in actions}
        self.menu = urwid.Pile(self.items)
        parts: list[Any] = []
        if status is not None:
            rows = stack_rows(status)
            parts.append(("pack", urwid.Text(("title", "Image stack, bottom first"))))
            parts.append(("pack", _cells("#", "Name", "Kind", "Created", "Size",
                                         "Description", "colhead")))
            self.stack = urwid.ListBox(urwid.SimpleListWalker(list[Any](rows)))
            self.stack.set_focus(len(rows) - 1)  # keep the top of the stack in view
            parts.append(("weight", 1, self.stack))
            parts.append(("pack", urwid.Divider("-")))
            parts.extend(("pack", w) for w in notice_rows(
                other_lines(status, boot_error), notice_limit, first_lines(status, actions)))
            right: list[urwid.Widget] = disk_rows(status, low_space)
        else:
            if boot_error:
                parts.append(("pack", urwid.Text(("error", "!! The boot failed:"))))
                parts.append(("pack", urwid.Padding(urwid.Text(("error", boot_error)),
                                                    left=3)))
            parts.append(("pack", urwid.Text(("error", "!! The image store cannot be used"))))
            parts.append(("pack", urwid.Padding(urwid.Text(("error", problem or "")),
                                                left=3)))
            parts.append(("pack", urwid.Divider()))
            parts.append(("pack", urwid.Text(
                "What can still help: Shell (look and repair by hand), Restore System "
                "(a fresh writable layer), Roll back to an older restore point, or "
                "Continue booting (the boot falls back to roottab.prev when it can).")))
            parts.append(("weight", 1, urwid.SolidFill(" ")))
            parts.append(("pack", urwid.Divider("-")))
            right = [urwid.Text(("dim", "no disk figures: the store cannot be read"))]
        cols = urwid.Columns([(38, self.menu), urwid.Pile(right)], dividechars=2)
        parts.append(("pack", cols))
        self.pile = urwid.Pile(parts, focus_item=len(parts) - 1)
        super().__init__(self.pile)

    def keypress(self, size: Size, key: str) -> str | None:
        rest = super().keypress(size, key)
        if rest is None:
            return None
        key = rest
        if key in self.hotkeys:
            self.hotkeys[key]()
            return None
        if key == "w":
            self.controller.details()
            return None
        if key in ("page up", "page down", "home", "end") and hasattr(self, "stack"):
            # scroll the stack while the actions keep the focus; its height is about what
            # the fixed parts leave of the screen
            maxcol, maxrow = box_size(size)
            return self.stack.keypress((maxcol, max(1, maxrow - 4 - len(self.items))), key)
        return key


# ---------------------------------------------------------------------------- help, details

HELP_LINES: list[Line | str] = [
    ("title", "Keys"),
    "Up/Down, Tab: move    Enter, Space: choose    Esc: go back    ?: this help",
    "a letter: its action   w: what changed   Ctrl-L: redraw   PgUp/PgDn: scroll",
    ("title", "Actions"),
    "Continue booting: boot the system as it is (default).  Reboot, Power off.",
    "Restore System: throw the writable layer away (/home and the images stay);",
    "  the saved settings are written back from the last capture. Types RESTORE.",
    "Undo: put back the layer that Restore or Roll back set aside. Types UNDO.",
    "Create Full / Incremental Restore Point: squash the whole system (full) or",
    "  just the writable layer (incremental) into a new image on the stack.",
    "Live Review: boot an older restore point on a RAM layer; only /home is real.",
    "Roll back to: make the stack end at an older restore point. Types ROLLBACK.",
    "Delete restore point: remove an image no stack needs. Types DELETE.",
    "Compact restore points: merge the stack's restore points into one image.",
    "Saved settings: the hostname, time zone, ... Restore writes back; edit them.",
    "Verify images: check every image against its checksum.  Shell: a root shell.",
    "Password: Shell and every action that changes the store ask once for root's",
    "  password, or the maintenance password when one is set (ibi passwd).",
]


class HelpView(Dialog):
    def __init__(self, on_close: Callable[[], Any]) -> None:
        super().__init__("Help", HELP_LINES, on_close)
        self.width = 78


class DetailsView(Page):
    """Every notice and what the writable layer changes (what Restore System discards)."""

    footer = " PgUp/PgDn, Up/Down: scroll  Esc: back"

    def __init__(self, notices: Sequence[Notice], changes: Sequence[Change], limit: int,
                 on_back: Callable[[], Any]) -> None:
        lines: list[Line | str] = [("title", "Notices")]
        lines += [f"  {n.level.value}: {menu_text(n)}" for n in notices] or ["  none"]
        lines += ["", ("title", "The writable layer (what Restore System discards)")]
        lines += [f"  {c.what:8} {human(c.size):>10}  {c.path}" for c in changes] or ["  empty"]
        if len(changes) >= limit:
            lines.append(("dim", f"  (only the first {limit} are listed)"))
        super().__init__("Details", lines, [ButtonRow([("Back", on_back)])], on_back)

    def keypress(self, size: Size, key: str) -> str | None:
        if key in ("up", "down"):
            maxcol, maxrow = box_size(size)
            self.body.keypress((maxcol, max(1, maxrow - 5)), key)
            return None
        return super().keypress(size, key)


DETAILS_SHOWN = 1000  # paths the Details page lists
SHELL = "The Shell"  # what asks for the password


def store_problem(exc: BaseException) -> str:
    """Why the store cannot be read, for the main screen of a broken or missing store."""
    if isinstance(exc, IbiError):
        return str(exc) + (f" ({exc.hint})" if exc.hint else "")
    if isinstance(exc, OSError):  # an unreadable disk: the menu still opens, to rescue it
        return f"cannot read the store: {exc}"
    return f"cannot read the store: {type(exc).__name__}: {exc}"
