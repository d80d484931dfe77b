"""Helpers shared by the tests of the menu's screens (not collected itself): a screen that
lets an App be built without a terminal (NullScreen), an App showing a view and its frame
rendered (app_with, render_app, attrs_of; the two SIZES the views are drawn at), and the
controller started over the in-memory engine and the synchronous host (start). The fakes
themselves are in tests/menu_fakes.py (the engine) and tests/menu_doubles.py (the host)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import urwid

from maintenance.auth import Auth
from screens.app import App
from screens.controller import Controller
from tests.menu_doubles import SyncHost, rows
from tests.menu_fakes import FakeEngine, password_system

SIZES = [(80, 24), (132, 43)]


class NullScreen(urwid.BaseScreen):
    """Lets an App be built without a terminal; these tests render its frame directly."""

    def draw_screen(self, size: tuple[int, int], canvas: urwid.Canvas) -> None:
        pass

    def get_cols_rows(self) -> tuple[int, int]:
        return 80, 24

    def get_input_descriptors(self) -> list[int]:
        return []


def app_with(view: urwid.Widget) -> App:
    app = App("/d", screen=NullScreen())
    app.home(view)
    return app


def render_app(app: App, size: tuple[int, int]) -> list[str]:
    return rows(app.frame, size)


def attrs_of(widget: urwid.Widget, size: tuple[int, int], needle: str) -> set[Any]:
    """The attributes drawn on the first row that shows ``needle``."""
    for row in widget.render(size, focus=True).content():
        if needle in b"".join(t for _a, _cs, t in row).decode():
            return {a for a, _cs, t in row if t.strip()}
    raise AssertionError(f"{needle!r} is not on the screen")


def start(tmp_path: Path, engine: FakeEngine | None = None, auth: Auth | None = None
          ) -> tuple[Controller, SyncHost, FakeEngine]:
    host = SyncHost()
    eng = engine or FakeEngine()
    ctl = Controller(host, eng, decision_path=str(tmp_path / "decision"),  # type: ignore[arg-type]
                     auth=auth or password_system(tmp_path))
    ctl.start()
    return ctl, host, eng
