"""The menu's generic screens: dialogs, pages, confirmations, forms, pickers and progress.
Views hold no logic: they draw what a controller hands them and call it (or the callbacks
it passed) when a key is pressed. None touches the engine. Each screen's own words live in
its ``*_views`` module (``main_views``, ``restore_views``, ...), next to its controller.

Every view has a ``footer`` (the help line the frame shows under it) and handles Esc itself
by calling its way back, so ``Esc goes back`` holds everywhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import urwid

from maintenance.errors import IbiError
from maintenance.model import ImageMeta, Progress

from .widgets import ButtonRow, MenuItem, Size, Wrap, bar, box_size, date, frame, human

Line = tuple[str | None, str]  # (attribute, text)

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


def image_place(m: ImageMeta, stack: Sequence[str]) -> str:
    """Where a restore point is, for its picker entry."""
    where = ("top of the stack" if stack and m.name == stack[-1] else
             "in the stack" if m.name in stack else "not in the stack")
    return where + (", pinned" if m.pinned else "")


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


def result_page(title: str, lines: Sequence[Line | str], on_ok: Callable[[], Any],
                *, danger: bool = False) -> Page:
    """The end of a long or destructive action: what happened, and OK back to the menu."""
    return Page(title, lines, [ButtonRow([("OK", on_ok)])], on_ok, danger=danger)


# what a progress view says while the store or the writable layer is read
READING_STORE = "Reading the store"
READING_LAYER = "Reading the writable layer"


def error_dialog(exc: BaseException, on_close: Callable[[], Any],
                 more: Sequence[tuple[str, Callable[[], Any]]] = ()) -> Dialog:
    """An action's error in one line (and the engine's hint); the menu carries on."""
    if isinstance(exc, IbiError):
        lines: list[Line | str] = [str(exc)]
        if exc.hint:
            lines.append(("dim", exc.hint))
    elif isinstance(exc, OSError):
        lines = [str(exc)]
    else:
        lines = [f"internal error: {type(exc).__name__}: {exc}",
                 ("dim", "the details are in the menu's log")]
    return Dialog("the action failed", lines, on_close, error=True, more=more)
