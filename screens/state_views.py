"""The screens of the managed state (``ibi state``): the table Restore System and Roll back
show of what they write into the fresh layer, with a "keep current" box per choice, and the
Saved settings screen that edits the registry's values. Like ``views``, these only draw
what their controllers (``restore``, ``rollback``, ``state``) hand them and call them back;
the words are theirs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import urwid

from maintenance.model import CaptureInfo, RegistryValue, StateItem, StatePlan

from .views import Line, Page
from .widgets import ButtonRow, CheckItem, Size, Wrap, date, plural

STATE_FOOTER = " Type a value  Up/Down: fields  Enter: save  Tab: buttons  Esc: back"
KEY_WIDTH = 18  # the registry key column of the Saved settings screen
READING = "Reading the saved settings"
SAVING = "Saving the settings"  # what asks for the password, and works
SAVED = "Settings saved"


# ---------------------------------------------------------------------------- the plan

class StateTable:
    """What an action writes into the fresh layer, path by path: the value now (in the
    layer being discarded), the value written and where it comes from. A value that is
    deleted, empty or unparsable now is marked; each choice that may keep its current value
    gets one "keep current" box. ``lines`` go into a page; ``chosen()`` reads the boxes.

    ``plan`` is a string when the plan could not be read: the page says why, and offers no
    choice."""

    def __init__(self, plan: StatePlan | str) -> None:
        self.boxes: dict[str, CheckItem] = {}
        self.lines: list[Line | str | urwid.Widget] = []
        if isinstance(plan, str):
            self.lines += [("title", "Saved settings:"),
                           ("error", f"  they cannot be read: {plan}")]
            return
        if plan.capture is None:
            self.lines += [("title", "Saved settings:"),
                           ("warning", "  no capture of them exists yet: each path gets the "
                                       "image's file")]
        else:  # one line: at 80x24 the first paths show under it without scrolling
            self.lines.append(("title", f"Saved settings, from capture {plan.capture} "
                                        f"({date(plan.created)}):"))
        if not plan.items:
            self.lines.append("  no managed paths")
            return
        last = {i.choice: n for n, i in enumerate(plan.items) if i.can_keep}
        for n, item in enumerate(plan.items):
            self.lines += item_lines(item, plan.capture)
            if last.get(item.choice) == n:  # after the last path of the choice: one box
                self.lines.append(self._box(item))

    def _box(self, item: StateItem) -> urwid.Widget:
        what = "file" if item.operator == "stash" else item.operator
        box = CheckItem(f"keep current {what}")
        self.boxes[item.choice] = box
        return urwid.Padding(box, left=2)

    def chosen(self) -> tuple[str, ...]:
        """The ticked choices, for ``keep_current``."""
        return tuple(c for c, box in self.boxes.items() if box.checked)


def item_lines(item: StateItem, capture: str | None) -> list[Line | str]:
    """One managed path: a line when the action leaves it as it is, else its value now and
    the value written (marked when the value now is deleted, empty or unparsable)."""
    head = f"  {item.path} ({item.operator})"
    if not item.changed:
        return [f"{head}: {item.now}, unchanged"]
    source = _source(item, capture)
    if item.now_valid:
        return [head, f"    now:     {item.now}",
                f"    written: {item.written}" + (f" ({source})" if source else "")]
    why = item.now.strip("()") if item.now in ("(deleted)", "(empty)") else "unparsable"
    return [head, ("warning", f"  ! now:     {item.now}"),
            ("warning", f"    written: {item.written} ({why}"
                        + (f" -> {source})" if source else " now)"))]


def _source(item: StateItem, capture: str | None) -> str:
    """Where the written value comes from, in words ("" when the value says it already)."""
    if capture is not None and item.source == f"capture {capture}":
        return "restored from the capture"
    if item.source == "kept":
        return "kept as it is now"
    if item.source == "the image":
        return "" if "the image's" in item.written else "the image's version"
    return f"restored from {item.source}"


def restored_lines(written: Sequence[str], kept: Sequence[str],
                   warnings: Sequence[str] = ()) -> list[Line | str]:
    """The managed paths of a restore's result: written from the capture, kept as they
    were, and those that could not be written."""
    lines: list[Line | str] = ["Saved settings written: " + (", ".join(written) or "none")]
    if kept:
        lines.append("Kept as they were: " + ", ".join(kept))
    lines += [("warning", f"! {w}") for w in warnings]
    return lines


# ---------------------------------------------------------------------------- the screen

class StateView(Page):
    """The saved settings: each registry value in an edit field (with its help), the paths
    kept byte for byte (stash) or always the image's (reference), and the captures. Save
    hands the changed values to ``on_save`` (an emptied field: None, the image's file)."""

    footer = STATE_FOOTER

    def __init__(self, values: Sequence[RegistryValue], captures: Sequence[CaptureInfo],
                 plan: StatePlan, on_save: Callable[[dict[str, str | None]], Any],
                 on_back: Callable[[], Any]) -> None:
        self.values = {v.key: v.value for v in values}
        self.on_save = on_save
        self.edits: dict[str, urwid.Edit] = {}
        lines: list[Line | str | urwid.Widget] = [
            "Restore System and Roll back write these into the fresh layer, from the last",
            "capture of them. Save makes a new capture with the values below.", ""]
        lines += capture_lines(captures)
        lines += ["", ("title", "Values (empty: the image's file is used)")]
        for v in values:
            lines += self._field(v)
        lines += paths_lines(plan)
        self.message = urwid.Text("")
        self.buttons = ButtonRow([("Save", self.save), ("Back", on_back)])
        super().__init__("Saved settings (state)", lines, [self.message, self.buttons],
                         on_back)
        if self.edits:
            first = next(i for i, w in enumerate(self.body_widgets) if w.selectable())
            self.body.set_focus(first)
            self.frame.focus_position = "body"

    def _field(self, v: RegistryValue) -> list[urwid.Widget]:
        field = Field(v.key, v.value or "")
        self.edits[v.key] = field.edit
        paths = ", ".join(v.paths)
        return [field, urwid.Padding(urwid.Text(("dim", f"{v.help} ({paths})")), left=4)]

    def changed(self) -> dict[str, str | None]:
        """The values the owner changed; an emptied field is None."""
        out: dict[str, str | None] = {}
        for key, edit in self.edits.items():
            new = edit.edit_text.strip() or None
            if new != self.values[key]:
                out[key] = new
        return out

    def save(self) -> None:
        values = self.changed()
        if not values:
            self.message.set_text(("warning", "Nothing changed: no new capture is made."))
            return
        self.message.set_text("")
        self.on_save(values)

    def keypress(self, size: Size, key: str) -> str | None:
        if key == "tab":
            self.frame.focus_position = ("footer" if self.frame.focus_position == "body"
                                         or not self.edits else "body")
            return None
        if key == "enter" and self.frame.focus_position == "body":
            self.save()
            return None
        return super().keypress(size, key)


class Field(Wrap):
    """A registry key and its value's edit field; a ``>`` marks the field being edited (seen
    without colour too)."""

    def __init__(self, key: str, value: str) -> None:
        self.edit = urwid.Edit("", value)
        self._marker = urwid.Text(" ")
        super().__init__(urwid.Columns([
            (2, self._marker), (KEY_WIDTH - 2, urwid.Text(key, wrap="clip")),
            urwid.AttrMap(self.edit, "edit")]))

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        self._marker.set_text(">" if focus else " ")
        return super().render(size, focus)

    def move_cursor_to_coords(self, size: Size, col: Any, row: int) -> bool:
        """A field that takes the focus has the cursor at the end of its value, so typing
        adds to it (urwid 2.6, Debian 13's, would put it at column 0 when the screen
        opens; newer ones keep the column of the field above)."""
        self.edit.set_edit_pos(len(self.edit.edit_text))
        return True


# how a capture came to be made, by its reason
_REASONS = {"install": "at install", "boot": "at a boot that reached multi-user",
            "save": "by ibi state save", "restore-point": "with a restore point",
            "set": "values set by hand"}


def capture_lines(captures: Sequence[CaptureInfo]) -> list[Line | str]:
    if not captures:
        return [("warning", "No capture yet: Restore System writes the image's files."),
                "Save makes the first one."]
    last = captures[0]
    older = len(captures) - 1
    lines: list[Line | str] = [
        f"Last capture: {last.id}",
        f"  made {date(last.created)} ({_REASONS.get(last.reason, last.reason)}); "
        + (f"{plural(older, 'older capture')} kept" if older else "no older capture")]
    lines += [("warning", f"  ! {note}") for note in last.notes]
    return lines


def paths_lines(plan: StatePlan) -> list[Line | str]:
    """The managed paths that are not edited here: kept byte for byte, or the image's."""
    lines: list[Line | str] = []
    for operator, title in (("stash", "Kept byte for byte (stash)"),
                            ("reference", "Always the image's version (reference)")):
        paths = [i.path for i in plan.items if i.operator == operator]
        if paths:
            lines += ["", ("title", title)]
            lines += [f"  {p}" for p in paths]
    return lines


def saved_lines(info: CaptureInfo, values: Mapping[str, str | None]) -> list[Line | str]:
    """The result of a Save: the new capture and what changed."""
    lines: list[Line | str] = [f"New capture {info.id}, made {date(info.created)}:"]
    lines += [f"  {k} = {v}" if v is not None else f"  {k}: removed (the image's file)"
              for k, v in values.items()]
    lines += ["", "Restore System and Roll back write these values from now on."]
    return lines
