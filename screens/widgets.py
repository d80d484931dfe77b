"""Small building blocks shared by the views: the palette, a focusable menu item that shows
its focus without colour, ASCII bars and frames, size formatting.

Everything drawn here is plain ASCII: a serial console with TERM=vt100 and LANG=C shows it
exactly as a UTF-8 terminal does (urwid's box-drawing characters would need DEC line
drawing, which some serial terminals and capture tools get wrong).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import urwid

from maintenance.status import human as human  # the CLI's, for the menu too

if TYPE_CHECKING:
    Wrap: TypeAlias = urwid.WidgetWrap[urwid.Widget]
else:  # urwid's WidgetWrap is generic only in newer releases
    Wrap = urwid.WidgetWrap

# the size urwid hands a widget: () fixed, (cols,) flow, (cols, rows) box
Size: TypeAlias = "tuple[()] | tuple[int] | tuple[int, int]"


def box_size(size: Size) -> tuple[int, int]:
    """The (cols, rows) of a box widget's size."""
    return cast("tuple[int, int]", size)

# (name, foreground, background, mono): the mono attribute is what a terminal without colour
# (--no-colour, TERM=vt100) shows, so focus and danger stay visible there too.
PALETTE: list[tuple[str, str, str, str]] = [
    ("header", "white,bold", "dark blue", "standout"),
    ("footer", "black", "light gray", "standout"),
    ("title", "white,bold", "", "bold"),
    ("colhead", "light gray,underline", "", "underline"),
    ("focus", "black", "light cyan", "standout"),
    ("error", "light red,bold", "", "bold"),
    ("warning", "yellow,bold", "", "bold"),
    ("info", "light cyan", "", ""),
    ("dim", "dark gray", "", ""),
    ("ok", "light green", "", ""),
    ("bar", "light green", "", ""),
    ("barlow", "light red,bold", "", "bold"),
    ("dialog", "white", "dark blue", ""),
    ("danger", "white,bold", "dark red", "standout"),
    ("edit", "white", "dark gray", "underline"),
]

FRAME_CHARS = {"tlcorner": "+", "tline": "-", "lline": "|", "trcorner": "+",
               "blcorner": "+", "rline": "|", "bline": "-", "brcorner": "+"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def date(d: datetime | None) -> str:
    return d.strftime("%Y-%m-%d %H:%M") if d else "?"


def bar(fraction: float | None, width: int) -> str:
    """``[#####.....]`` of total ``width`` characters; ``[ ? ]`` when the fraction is unknown."""
    inner = max(1, width - 2)
    if fraction is None:
        return "[" + "?".center(inner, ".") + "]"
    fill = round(max(0.0, min(1.0, fraction)) * inner)
    return "[" + "#" * fill + "." * (inner - fill) + "]"


def frame(body: urwid.Widget, title: str = "") -> urwid.Widget:
    """An ASCII line box."""
    c = FRAME_CHARS
    return urwid.LineBox(body, title=title, tlcorner=c["tlcorner"], tline=c["tline"],
                         lline=c["lline"], trcorner=c["trcorner"], blcorner=c["blcorner"],
                         rline=c["rline"], bline=c["bline"], brcorner=c["brcorner"])


class MenuItem(Wrap):
    """A selectable line that calls ``on_press`` on Enter or Space and shows its focus with a
    ``>`` marker (visible without colour) as well as the ``focus`` attribute. A disabled
    one is drawn dim and cannot take the focus (its label should say why: dim is invisible
    without colour)."""

    def __init__(self, label: str, on_press: Callable[[], Any], hotkey: str = "",
                 *, enabled: bool = True) -> None:
        self.label = label
        self.hotkey = hotkey
        self.enabled = enabled
        self._on_press = on_press
        self._marker = urwid.Text(" ")
        key = urwid.Text(f"{hotkey} " if hotkey else "")
        self._text = urwid.Text(label, wrap="clip")
        cols = urwid.Columns([(2, self._marker), (len(key.text), key), self._text])
        super().__init__(urwid.AttrMap(cols, None if enabled else "dim", focus_map="focus"))

    def selectable(self) -> bool:
        return self.enabled

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        # the marker is a function of focus only; urwid caches canvases per focus state
        self._marker.set_text(">" if focus else " ")
        return super().render(size, focus)

    def keypress(self, size: Size, key: str) -> str | None:
        if key in ("enter", " "):
            self._on_press()
            return None
        return key


class CheckItem(Wrap):
    """A check box (``[ ] label``, ``[X] label``; Space or Enter ticks it) that shows its
    focus with a ``>`` marker, as MenuItem does, and the ``focus`` attribute."""

    def __init__(self, label: str) -> None:
        self.box = urwid.CheckBox(label)
        self._marker = urwid.Text(" ")
        cols = urwid.Columns([(2, self._marker), self.box])
        super().__init__(urwid.AttrMap(cols, None, focus_map="focus"))

    @property
    def checked(self) -> bool:
        return bool(self.box.get_state())

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        self._marker.set_text(">" if focus else " ")
        return super().render(size, focus)


class ButtonRow(Wrap):
    """A row of MenuItems side by side (``[ OK ]  [ Cancel ]``), left/right moves focus."""

    def __init__(self, items: list[tuple[str, Callable[[], Any]]]) -> None:
        self.items = [MenuItem(f"[ {label} ]", fn) for label, fn in items]
        cols = urwid.Columns([(len(i.label) + 3, i) for i in self.items], dividechars=2)
        super().__init__(cols)


def label_value(label: str, value: str, width: int = 16, attr: str | None = None
                ) -> urwid.Widget:
    return urwid.Columns([(width, urwid.Text(label)),
                          urwid.Text((attr, value) if attr else value)])
