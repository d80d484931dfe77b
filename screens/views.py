"""The menu's screens. Views hold no logic: they draw what the controller hands them and call
the controller (or the callbacks it passed) when a key is pressed. None touches the engine.

Every view has a ``footer`` (the help line the frame shows under it) and handles Esc itself
by calling its way back, so ``Esc goes back`` holds everywhere."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import urwid

from maintenance.model import Change, ImageMeta, Level, Notice, Progress, StackEntry, Status

from .widgets import ButtonRow, MenuItem, Size, Wrap, bar, box_size, date, frame, human, plural

Line = tuple[str | None, str]  # (attribute, text)


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
DIALOG_FOOTER = " Enter: OK  Esc: back  ?: help"
EDIT_FOOTER = " Type, then Enter  Tab/Down: buttons  PgUp/PgDn: scroll  Esc: back"
KEEP_FOOTER = " Type, then Enter  Tab: boxes, buttons  Space: tick  PgDn: scroll  Esc: back"
PICK_FOOTER = " Up/Down: move  Enter: choose  Esc: back  ?: help"
BUSY_FOOTER = " Working - please wait (the menu stays responsive; ?: help)"


def _text(lines: Sequence[Line | str]) -> list[urwid.Widget]:
    """Text lines; a line's leading spaces become an indent that its wrapped part keeps."""
    out: list[urwid.Widget] = []
    for ln in lines:
        attr, text = (None, ln) if isinstance(ln, str) else ln
        body = text.lstrip(" ")
        widget = urwid.Text((attr, body) if attr else body)
        indent = len(text) - len(body)
        out.append(urwid.Padding(widget, left=indent) if indent and body else widget)
    return out


class Bar(urwid.Widget):
    """A one-line ASCII bar as wide as it is given: ``[####......]``."""

    _sizing = frozenset([urwid.Sizing.FLOW])
    ignore_focus = True

    def __init__(self, fraction: float | None, attr: str = "bar",
                 max_width: int | None = None) -> None:
        super().__init__()
        self.fraction = fraction
        self.attr = attr
        self.max_width = max_width

    def set_fraction(self, fraction: float | None) -> None:
        self.fraction = fraction
        self._invalidate()

    def rows(self, size: tuple[int], focus: bool = False) -> int:
        return 1

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        maxcol = size[0] if size else 1
        width = min(maxcol, self.max_width or maxcol)
        raw = bar(self.fraction, width).encode("ascii")
        return urwid.TextCanvas([raw.ljust(maxcol)], attr=[[(self.attr, width)]],
                                maxcol=maxcol)


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
# the engine's notices that ``boot_lines`` says in short (the whole text stays in Details)


def boot_lines(status: Status) -> list[Notice]:
    """A stack on trial and the last automatic fallback, one short line each: they decide
    what the next boots do, so the main screen shows them first and whole."""
    out = []
    t = status.trial
    if t is not None:
        left = t.tries - status.boots
        then = ("the next boot falls back" if left <= 0 else "falls back") + \
            f" to [{' '.join(t.good)}]"
        failed = t.failure if len(t.failure) <= 60 else t.failure[:57] + "..."
        out.append(Notice(Level.WARNING if status.boots else Level.INFO,
                          f"On trial ({t.reason}): {status.boots} of "
                          f"{plural(t.tries, 'boot')} used; {then}"
                          + (f"; last failure: {failed}" if failed else "")))
    fb = status.fallback
    if fb is not None:
        out.append(Notice(Level.WARNING,
                          f"Automatic fallback {date(fb.at)}: [{' '.join(fb.failed)}] failed "
                          f"{plural(fb.boots, 'boot')}; back on [{' '.join(fb.good)}]"))
    return out


def depth_lines(status: Status, actions: Collection[str] = ALL_ACTIONS) -> list[Notice]:
    """The engine's ``depth`` notice (the stack is deeper than the policy's bound), one
    short line with the key that compacts it."""
    if not any(n.topic == "depth" for n in status.notices):
        return []
    hint = "k compacts it" if "compact" in actions else "ibi compact merges it"
    return [Notice(Level.INFO, f"The stack is {len(status.stack)} images deep (past the "
                               f"policy's bound): {hint}", "depth")]


def notice_rows(notices: Sequence[Notice], limit: int,
                first: Sequence[Notice] = ()) -> list[urwid.Widget]:
    """``first`` (always shown), then up to ``limit`` rows in all of ``notices``, errors
    first, and how many more the Details page (w) has."""
    order = sorted(notices, key=lambda n: (n.level is not Level.ERROR,
                                           n.level is not Level.WARNING))
    limit = max(1, limit - len(first))
    rows: list[urwid.Widget] = [urwid.Text((MARK[n.level][0], MARK[n.level][1] + n.message))
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
            first = boot_lines(status) + depth_lines(status, actions)
            said = {"trial"} if status.trial else set()  # boot_lines shows them
            said |= {"fallback"} if status.fallback else set()
            said |= {n.topic for n in first if n.topic}  # depth_lines shows it
            notices = tuple(n for n in status.notices if n.topic not in said or not n.topic)
            if boot_error:
                notices = (Notice(Level.ERROR, f"the boot failed: {boot_error}"), *notices)
            parts.extend(("pack", w) for w in notice_rows(notices, notice_limit, first))
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


# ---------------------------------------------------------------------------- dialogs

class Dialog(Wrap):
    """A message with an OK button (and any further choices): errors and notes. Esc closes
    it, as does OK."""

    footer = DIALOG_FOOTER

    def __init__(self, title: str, lines: Sequence[Line | str], on_close: Callable[[], Any],
                 *, error: bool = False,
                 more: Sequence[tuple[str, Callable[[], Any]]] = ()) -> None:
        self.on_close = on_close
        self.buttons = ButtonRow([("OK", on_close), *more])
        body = [*_text(lines), urwid.Divider(), self.buttons]
        box = frame(urwid.Pile(body), title=("Error: " if error else "") + title)
        super().__init__(urwid.AttrMap(box, "danger" if error else "dialog"))
        self.width = max(40, min(76, max(len(str(x if isinstance(x, str) else x[1]))
                                         for x in [*lines, title]) + 6))

    def keypress(self, size: Size, key: str) -> str | None:
        if key == "esc":
            self.on_close()
            return None
        return super().keypress(size, key)


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


# ---------------------------------------------------------------------------- pages

class Page(Wrap):
    """A titled page: a scrolling body of text and a fixed bottom part with the controls."""

    footer = DIALOG_FOOTER

    def __init__(self, title: str, lines: Sequence[Line | str | urwid.Widget],
                 bottom: Sequence[urwid.Widget], on_back: Callable[[], Any] | None,
                 *, danger: bool = False) -> None:
        self.on_back = on_back
        self.body_widgets: list[urwid.Widget] = [
            w if isinstance(w, urwid.Widget) else _text([w])[0] for w in lines]
        self.body = urwid.ListBox(urwid.SimpleListWalker(list[Any](self.body_widgets)
                                                          or [urwid.Text("")]))
        head = urwid.Text(("danger" if danger else "title", f" {title} "))
        self.controls = urwid.Pile([urwid.Divider("-"), *bottom]) if bottom else None
        self.frame = urwid.Frame(self.body, header=urwid.Pile([head, urwid.Divider()]),
                                 footer=self.controls,
                                 focus_part="footer" if self.controls else "body")
        super().__init__(self.frame)

    def keypress(self, size: Size, key: str) -> str | None:
        if key in ("page up", "page down") and self.frame.focus_position == "footer":
            # the body's own height: what the title and the controls leave of the page
            maxcol, maxrow = box_size(size)
            used = sum(w.rows((maxcol,)) for w in (self.frame.header, self.controls) if w)
            return self.body.keypress((maxcol, max(1, maxrow - used)), key)
        rest = super().keypress(size, key)
        if rest == "esc" and self.on_back is not None:
            self.on_back()
            return None
        return rest


class ConfirmView(Page):
    """A destructive action: what is discarded and what is kept, then the word to type.

    The body may hold choices (check boxes, e.g. "keep current"): Tab goes from the word to
    them, then to the buttons and back; typing a letter there goes back to the word."""

    footer = EDIT_FOOTER

    def __init__(self, title: str, lines: Sequence[Line | str | urwid.Widget], word: str,
                 on_confirm: Callable[[], Any], on_cancel: Callable[[], Any]) -> None:
        self.word = word
        self.on_confirm = on_confirm
        self.edit = urwid.Edit(f"Type {word} and press Enter to go ahead: ")
        self.message = urwid.Text("")
        self.buttons = ButtonRow([("Cancel", on_cancel)])
        self.controls_pile = urwid.Pile([urwid.AttrMap(self.edit, "edit"), self.message,
                                         self.buttons])
        super().__init__(title, lines, [self.controls_pile], on_cancel, danger=True)
        self.choices = [i for i, w in enumerate(self.body_widgets) if w.selectable()]
        if self.choices:
            self.footer = KEEP_FOOTER

    def keypress(self, size: Size, key: str) -> str | None:
        if key == "tab":
            self._tab()
            return None
        if self.frame.focus_position == "body":
            if len(key) != 1 or key == " ":  # moving among the choices, ticking one
                return super().keypress(size, key)
            self._focus_word()  # a letter: it belongs to the word
        if key == "enter" and self.controls_pile.focus is not self.buttons:
            if self.edit.edit_text.strip() == self.word:
                self.on_confirm()
            else:
                self.message.set_text(("warning", f"Type {self.word} exactly (capital "
                                       "letters), or press Esc to cancel."))
            return None
        return super().keypress(size, key)

    def _tab(self) -> None:
        """The word, then the choices (if any), then the buttons, then the word again."""
        if self.frame.focus_position == "body":
            self.frame.focus_position = "footer"
            self.controls_pile.focus_position = 2
        elif self.controls_pile.focus_position == 0 and self.choices:
            if self.body.focus_position not in self.choices:
                self.body.set_focus(self.choices[0])
            self.frame.focus_position = "body"
        elif self.controls_pile.focus_position == 0:
            self.controls_pile.focus_position = 2
        else:
            self._focus_word()

    def _focus_word(self) -> None:
        self.frame.focus_position = "footer"
        self.controls_pile.focus_position = 0


class CreateView(Page):
    """Name and description of a new image (a restore point, or compacted ones), with what
    it will do; ``action`` labels the button that goes ahead, ``more`` adds buttons before
    Cancel."""

    footer = EDIT_FOOTER

    def __init__(self, title: str, lines: Sequence[Line | str | urwid.Widget],
                 on_create: Callable[[str, str], Any], on_cancel: Callable[[], Any], *,
                 action: str = "Create",
                 more: Sequence[tuple[str, Callable[[], Any]]] = ()) -> None:
        self.on_create = on_create
        self.name = urwid.Edit("Name (empty: automatic): ")
        self.description = urwid.Edit("Description:              ")
        self.buttons = ButtonRow([(action, self._create), *more, ("Cancel", on_cancel)])
        self.form = urwid.Pile([urwid.AttrMap(self.description, "edit"),
                                urwid.AttrMap(self.name, "edit"), urwid.Divider(),
                                self.buttons])
        super().__init__(title, lines, [self.form], on_cancel)

    def _create(self) -> None:
        self.on_create(self.name.edit_text.strip(), self.description.edit_text.strip())

    def keypress(self, size: Size, key: str) -> str | None:
        if key == "enter" and self.form.focus is not self.buttons:
            self._create()
            return None
        if key == "tab":
            pos = self.form.focus_position
            self.form.focus_position = {0: 1, 1: 3}.get(pos, 0)
            return None
        return super().keypress(size, key)


class PickerView(Page):
    """Choose one restore point from a list."""

    footer = PICK_FOOTER

    def __init__(self, title: str, intro: Sequence[Line | str],
                 choices: Sequence[tuple[str, str]], on_pick: Callable[[str], Any],
                 on_cancel: Callable[[], Any]) -> None:
        self.items = [MenuItem(label, _bind(on_pick, name)) for name, label in choices]
        super().__init__(title, [*intro, urwid.Divider(), *self.items], [], on_cancel)
        if self.items:
            self.body.set_focus(len(intro) + 1)


def image_choice(m: ImageMeta, where: str, needed_by: Sequence[str]) -> str:
    """A restore point as a two-line picker entry."""
    extra = f"; needed by {', '.join(needed_by)}" if needed_by else ""
    return (f"{m.name:<24} {m.kind.value:<11} {date(m.created)}  {human(m.size):>9}\n"
            f"  {m.description or '(no description)'}  [{where}{extra}]")


def _bind(fn: Callable[[str], Any], arg: str) -> Callable[[], Any]:
    return lambda: fn(arg)


class ProgressView(Wrap):
    """A long action at work: a bar fed by the engine's progress reports, the phase, and a
    clock that keeps moving (the work runs in a thread, off the UI loop)."""

    footer = BUSY_FOOTER
    SPIN = "|/-\\"

    def __init__(self, title: str, note: str = "") -> None:
        self.bar = Bar(None)
        self.phase = urwid.Text("working...")
        self.figures = urwid.Text("")
        self.clock = urwid.Text("")
        body = urwid.Pile([urwid.Text(("title", title)), urwid.Divider(),
                           urwid.Text(note) if note else urwid.Divider(), urwid.Divider(),
                           self.bar, self.phase, self.figures, urwid.Divider(), self.clock])
        super().__init__(urwid.Filler(urwid.Padding(body, left=2, right=2), valign="top",
                                      top=1))

    def update(self, progress: Progress | None, elapsed: float) -> None:
        if progress is not None:
            frac = progress.fraction
            self.bar.set_fraction(frac)
            pct = f"{frac * 100:3.0f} %  " if frac is not None else ""
            self.phase.set_text(f"{pct}{progress.phase} {progress.message}".rstrip())
            if progress.total:
                # checksumming and copying count bytes; mksquashfs counts its own units
                size = progress.phase in ("verifying", "copying")
                done, total = ((human(progress.done), human(progress.total)) if size
                               else (str(progress.done), str(progress.total)))
                unit = " directories" if progress.phase == "checking" else ""  # compaction
                self.figures.set_text(("dim", f"{done} of {total}{unit}"))
        spin = self.SPIN[int(elapsed * 4) % 4]
        self.clock.set_text(("dim", f"{spin} {elapsed:.0f} s elapsed"))

    def keypress(self, size: Size, key: str) -> str | None:
        return None if key != "?" else key  # nothing to press while it works, but help


class DetailsView(Page):
    """Every notice and what the writable layer changes (what Restore System discards)."""

    footer = " PgUp/PgDn, Up/Down: scroll  Esc: back"

    def __init__(self, notices: Sequence[Notice], changes: Sequence[Change], limit: int,
                 on_back: Callable[[], Any]) -> None:
        lines: list[Line | str] = [("title", "Notices")]
        lines += [f"  {n.level.value}: {n.message}" for n in notices] or ["  none"]
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


def result_page(title: str, lines: Sequence[Line | str], on_ok: Callable[[], Any],
                *, danger: bool = False) -> Page:
    """The end of a long or destructive action: what happened, and OK back to the menu."""
    return Page(title, lines, [ButtonRow([("OK", on_ok)])], on_ok, danger=danger)
