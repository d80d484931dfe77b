"""The password dialog: what the menu asks before its Shell and before the first action
that changes the store (maintenance/auth.py decides whose password, ``password`` when).
Like ``views``, it only draws and calls back; the words are its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import urwid

from .widgets import ButtonRow, Size, Wrap, frame

PASSWORD_FOOTER = " Type the password (shown as *), Enter: OK  Tab: buttons  Esc: cancel"


class PasswordDialog(Wrap):
    """Masked input of root's password or the maintenance password, for ``what`` (an
    action's name). Enter hands the password to ``on_submit``; the controller then calls
    ``checking()`` and, for a wrong one, ``wrong()``: the user tries again or presses Esc
    (``on_cancel``). While the password is being checked every key waits."""

    footer = PASSWORD_FOOTER
    width = 66

    def __init__(self, what: str, kind: str, source: str,
                 on_submit: Callable[[str], Any], on_cancel: Callable[[], Any]) -> None:
        self.on_submit = on_submit
        self.on_cancel = on_cancel
        self.busy = False
        lines: list[str | tuple[str, str]]
        if kind == "maintenance":
            lines = [f"{what} needs the maintenance password.",
                     ("dim", "It was set with ibi passwd, and replaces root's password.")]
        else:
            lines = [f"{what} needs root's password.",
                     ("dim", f"Root's password of the system being maintained ({source}).")]
        lines.append(("dim", "Asked once: the rest of this session needs no password."))
        self.edit = urwid.Edit("Password: ", mask="*")
        self.message = urwid.Text("")
        self.buttons = ButtonRow([("OK", self._submit), ("Cancel", on_cancel)])
        self.field = urwid.AttrMap(self.edit, "edit")
        self.pile = urwid.Pile([*(urwid.Text(ln) for ln in lines), urwid.Divider(),
                                self.field, self.message, self.buttons])
        self.pile.focus_position = self._index(self.field)
        super().__init__(urwid.AttrMap(frame(self.pile, title="Password"), "dialog"))

    def _submit(self) -> None:
        if not self.busy:
            self.on_submit(self.edit.edit_text)

    def checking(self) -> None:
        self.busy = True
        self.message.set_text(("dim", "Checking the password..."))

    def wrong(self) -> None:
        """A wrong password: say so, empty the field, and let the user try again."""
        self.busy = False
        self.edit.set_edit_text("")
        self.pile.focus_position = self._index(self.field)
        self.message.set_text(("warning", "Wrong password. Try again, or press Esc to cancel."))

    def keypress(self, size: Size, key: str) -> str | None:
        if self.busy:
            return key if key == "ctrl l" else None
        if key == "esc":
            self.on_cancel()
            return None
        if key == "tab":
            self.pile.focus_position = (self._index(self.buttons)
                                        if self.pile.focus is self.field
                                        else self._index(self.field))
            return None
        if key == "enter" and self.pile.focus is self.field:
            self._submit()
            return None
        rest = super().keypress(size, key)
        # nothing typed here may reach the menu under the dialog (a letter is a shortcut)
        return rest if rest == "ctrl l" else None

    def _index(self, widget: urwid.Widget) -> int:
        return next(i for i, (w, _o) in enumerate(self.pile.contents) if w is widget)
