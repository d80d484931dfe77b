"""The menu's views other than the main one, rendered at 80x24 and 132x43 and asserted on
their text: the confirmation (the word to type; the saved settings' table and its keep
boxes), the create form, the picker, the progress view, a dialog over the menu, the saved
settings view, the Compact plan; keys pressed against them (urwid's own widget-test style:
render, keypress). The main view is in tests/test_screens_main_view.py; the helpers in
tests/menu_views_kit.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import urwid

from maintenance.model import Progress
from screens.app import App
from screens.controller import Controller
from screens.main_views import MainView
from screens.state_views import StateTable, StateView
from screens.views import (
    KEEP_FOOTER,
    ConfirmView,
    CreateView,
    Dialog,
    PickerView,
    ProgressView,
)
from tests.menu_doubles import RecordingController, SyncHost, make_status, screen_text
from tests.menu_fake_state import FakeState
from tests.menu_fakes import FakeEngine, password_system
from tests.menu_views_kit import SIZES, app_with, attrs_of, render_app


def test_confirm_needs_the_exact_word() -> None:
    done: list[str] = []
    view = ConfirmView("Restore System", ["Discarded: 3 files", "Kept: /home"], "RESTORE",
                       lambda: done.append("yes"), lambda: done.append("cancel"))
    size = (80, 22)
    text = screen_text(view, size)
    assert "Restore System" in text and "Kept: /home" in text
    assert "Type RESTORE and press Enter to go ahead:" in text
    for ch in "restore":
        view.keypress(size, ch)
    view.keypress(size, "enter")
    assert done == []
    assert "Type RESTORE exactly" in screen_text(view, size)
    for _ in "restore":
        view.keypress(size, "backspace")
    for ch in "RESTORE":
        view.keypress(size, ch)
    view.keypress(size, "enter")
    assert done == ["yes"]


def test_confirm_cancel_by_esc_and_by_button() -> None:
    done: list[str] = []
    view = ConfirmView("Delete", ["x"], "DELETE", lambda: done.append("yes"),
                       lambda: done.append("cancel"))
    view.keypress((80, 22), "esc")
    view.keypress((80, 22), "tab")
    view.keypress((80, 22), "enter")
    assert done == ["cancel", "cancel"]


def test_confirm_long_list_scrolls_while_typing() -> None:
    lines = [f"changed /etc/f{i:03}" for i in range(100)]
    view = ConfirmView("Restore System", lines, "RESTORE", lambda: None, lambda: None)
    size = (80, 22)
    assert "/etc/f000" in screen_text(view, size)
    view.keypress(size, "page down")
    text = screen_text(view, size)
    assert "/etc/f000" not in text and "Type RESTORE" in text


def test_create_form_passes_name_and_description() -> None:
    got: list[tuple[str, str]] = []
    view = CreateView("Create Incremental Restore Point", ["Squashes the layer"],
                      lambda n, d: got.append((n, d)), lambda: got.append(("", "cancel")))
    size = (80, 22)
    for ch in "new driver":
        view.keypress(size, ch)
    view.keypress(size, "tab")
    for ch in "drv":
        view.keypress(size, ch)
    assert "Description:" in screen_text(view, size)
    view.keypress(size, "enter")
    assert got == [("drv", "new driver")]


def test_picker_picks_the_focused_entry() -> None:
    got: list[str] = []
    view = PickerView("Roll back to...", ["Choose:"], [("b", "b  label"), ("a", "a  label")],
                      got.append, lambda: got.append("cancel"))
    size = (80, 22)
    assert "> b  label" in screen_text(view, size)
    view.keypress(size, "down")
    view.keypress(size, "enter")
    view.keypress(size, "esc")
    assert got == ["a", "cancel"]


def test_progress_view_draws_a_bar_and_swallows_keys() -> None:
    view = ProgressView("Creating a restore point", "Squashing")
    view.update(Progress("squashing", 50, 100, "x.sqfs"), 3.2)
    text = screen_text(view, (80, 22))
    assert "Creating a restore point" in text
    assert "[" + "#" * 37 + "." * 37 + "]" in text  # 76 columns wide, half full
    assert "50 %  squashing x.sqfs" in text and "3 s elapsed" in text
    assert "50 of 100" in text
    view.update(Progress("verifying", 3 << 20, 12 << 20, "x.sqfs"), 3.5)
    assert "3.0 MiB of 12.0 MiB" in screen_text(view, (80, 22))
    assert view.keypress((80, 22), "esc") is None
    assert view.keypress((80, 22), "enter") is None
    assert view.keypress((80, 22), "?") == "?"
    view.update(Progress("checking", 20, 40, "merged"), 3.7)  # compaction's check
    assert "50 %  checking merged" in screen_text(view, (80, 22))
    assert "20 of 40 directories" in screen_text(view, (80, 22))
    view.update(Progress("reading", 3, 0), 4.0)  # unknown total
    assert "[" + "?".center(74, ".") + "]" in screen_text(view, (80, 22))


def test_error_dialog_over_the_menu() -> None:
    closed: list[int] = []
    app = app_with(MainView(RecordingController(), make_status()))
    app.dialog(Dialog("the action failed", ["not enough space to squash the writable layer"],
                      lambda: closed.append(1), error=True))
    text = "\n".join(render_app(app, (80, 24)))
    assert "Error: the action failed" in text
    assert "not enough space to squash the writable layer" in text
    assert "Traceback" not in text
    app.frame.keypress((80, 24), "enter")
    assert closed == [1]


# ---------------------------------------------------------------------------- managed state

def restore_screen(eng: FakeEngine, tmp_path: Path) -> App:
    """The Restore System confirmation as the controller builds it, in the App's frame."""
    host = SyncHost()
    Controller(host, eng, decision_path=str(tmp_path / "d"),  # type: ignore[arg-type]
               auth=password_system(tmp_path)).start()
    host.press("r")
    return app_with(host.views[-1])


def changed_state() -> FakeState:
    st = FakeState()
    st.now["/etc/hostname"] = "(deleted)"
    st.now["/etc/hosts"] = "127.0.1.1 web02"
    st.now["/etc/ssh/ssh_host_ed25519_key"] = "sha256 9f8e7d6c"
    return st


@pytest.mark.parametrize("size", SIZES)
def test_restore_confirmation_shows_the_managed_state(size: tuple[int, int],
                                                      tmp_path: Path) -> None:
    eng = FakeEngine()
    eng.state = changed_state()
    app = restore_screen(eng, tmp_path)
    screen = render_app(app, size)
    text = "\n".join(screen)
    assert len(screen) == size[1] and all(len(r) == size[0] for r in screen)
    assert "Restore System" in screen[1] and "Type RESTORE and press Enter" in text
    assert "Discarded: the writable layer" in text and "/home: every user's files" in text
    assert "Saved settings, from capture 20261120T093000Z-boot (2026-11-20 09:30):" in text
    i = next(i for i, r in enumerate(screen) if "/etc/hostname (hostname)" in r)
    assert screen[i + 1].strip() == "! now:     (deleted)"
    assert screen[i + 2].strip() == "written: web01 (deleted -> restored from the capture)"
    assert "warning" in attrs_of(app.frame, size, "! now:     (deleted)")
    assert "warning" in attrs_of(app.frame, size, "(deleted -> restored")
    assert screen[-1].rstrip() == KEEP_FOOTER.rstrip()
    app.frame.keypress(size, "tab")
    text = "\n".join(render_app(app, size))
    assert "now:     127.0.1.1 web02" in text
    assert "written: 127.0.1.1 web01 (restored from the capture)" in text
    assert "> [ ] keep current hostname" in text


def test_keep_boxes_sit_between_the_word_and_the_buttons() -> None:
    table = StateTable(changed_state().plan())
    done: list[tuple[str, ...]] = []
    view = ConfirmView("Restore System", ["Discarded: 3 files", *table.lines], "RESTORE",
                       lambda: done.append(table.chosen()), lambda: done.append(("cancel",)))
    size = (80, 22)
    assert view.footer == KEEP_FOOTER
    view.keypress(size, "tab")  # the first box
    view.keypress(size, "down")  # the second
    view.keypress(size, "enter")  # Enter ticks a box, as Space does
    assert "> [X] keep current file" in screen_text(view, size)
    view.keypress(size, "tab")  # the buttons
    assert "> [ Cancel ]" in screen_text(view, size)
    view.keypress(size, "tab")  # the word
    for ch in "RESTORE":
        view.keypress(size, ch)
    view.keypress(size, "tab")  # back to the box it left
    assert "> [X] keep current file" in screen_text(view, size)
    view.keypress(size, " ")
    view.keypress(size, "up")
    view.keypress(size, " ")
    view.keypress(size, "enter")  # ticks the box: the word is not where the focus is
    assert done == []
    view.keypress(size, "R")  # a letter goes back to the word
    assert "go ahead: RESTORER" in screen_text(view, size)
    view.keypress(size, "backspace")
    view.keypress(size, "enter")
    assert done == [()]  # ticked, then unticked, both boxes


def test_a_plain_confirmation_has_no_boxes_to_tab_to() -> None:
    view = ConfirmView("Delete", ["x"], "DELETE", lambda: None, lambda: None)
    assert view.footer != KEEP_FOOTER
    view.keypress((80, 22), "tab")
    assert "> [ Cancel ]" in screen_text(view, (80, 22))


def test_state_table_words() -> None:
    st = FakeState()
    st.now["/etc/machine-id"] = "unparsable: 'xyz' is not 32 hex digits"
    plan = st.plan()
    text = "\n".join(str(x if isinstance(x, str) else x[1]) for x in StateTable(plan).lines
                     if not isinstance(x, urwid.Widget))
    assert "/etc/timezone (timezone): Europe/Berlin, unchanged" in text
    assert "! now:     unparsable: 'xyz' is not 32 hex digits" in text
    assert f"written: {plan.items[3].written} (unparsable -> restored from the capture)" in text
    assert "/etc/issue (reference): Debian GNU/Linux 13, unchanged" in text
    item = dataclasses.replace(plan.items[0], now="web02", written="web02", source="kept")
    assert item_text(dataclasses.replace(item, changed=True)) == [
        "  /etc/hostname (hostname)", "    now:     web02", "    written: web02 (kept as it "
        "is now)"]
    image = dataclasses.replace(plan.items[0], now="(empty)", now_valid=False,
                                written="debian", source="the image", changed=True)
    assert item_text(image)[-1] == "    written: debian (empty -> the image's version)"
    gone = dataclasses.replace(image, now="(deleted)", written="(the image's file)")
    assert item_text(gone)[1:] == ["  ! now:     (deleted)",
                                   "    written: (the image's file) (deleted now)"]
    ref = dataclasses.replace(plan.items[5], now="changed in the writable layer",
                              written="the image's", changed=True)
    assert item_text(ref)[1:] == ["    now:     changed in the writable layer",
                                  "    written: the image's"]
    broken = StateTable("state/captures: Permission denied")
    assert broken.lines[1] == ("error", "  they cannot be read: "
                                        "state/captures: Permission denied")
    assert broken.chosen() == ()


def item_text(item: Any) -> list[str]:
    from screens.state_views import item_lines
    return [x if isinstance(x, str) else x[1] for x in item_lines(item, "c1")]


def state_view(st: FakeState, saved: list[Any]) -> StateView:
    eng = FakeEngine()
    eng.state = st
    return StateView(eng.state_values(), eng.state_captures(), eng.state_plan(),
                     saved.append, lambda: saved.append("back"))


@pytest.mark.parametrize("size", SIZES)
def test_state_view_fits_and_says_what_it_edits(size: tuple[int, int]) -> None:
    st = FakeState()
    st.capture("save", st.values())
    st.captures[0] = dataclasses.replace(
        st.captures[0], notes=("/etc/hostname was deleted: the value before is kept",))
    app = app_with(state_view(st, []))
    screen = render_app(app, size)
    text = "\n".join(screen)
    assert len(screen) == size[1] and all(len(r) == size[0] for r in screen)
    assert "Saved settings (state)" in screen[1]
    assert "Last capture: 20261120T103000Z-save" in text
    assert "(by ibi state save); 1 older capture kept" in text
    assert "! /etc/hostname was deleted: the value before is kept" in text
    assert "warning" in attrs_of(app.frame, size, "! /etc/hostname was deleted")
    assert "> hostname.name   web01" in text
    assert "machine-id.id   0123456789abcdef0123456789abcdef" in text
    assert "32 lower-case hex digits (/etc/machine-id)" in text
    assert "[ Save ]" in text and "Esc: back" in screen[-1]
    app.frame.keypress(size, "page down")
    text = "\n".join(render_app(app, size))
    assert "Kept byte for byte (stash)" in text and "/etc/ssh/ssh_host_ed25519_key" in text
    assert "Always the image's version (reference)" in text and "/etc/issue" in text


def test_state_view_without_a_capture() -> None:
    text = screen_text(state_view(FakeState(captured=False), []), (80, 22))
    assert "No capture yet: Restore System writes the image's files." in text
    assert "hostname.name" in text and "web01" not in text


def test_state_view_hands_over_only_what_changed() -> None:
    saved: list[Any] = []
    view = state_view(FakeState(), saved)
    size = (80, 22)
    view.keypress(size, "enter")
    assert saved == [] and "Nothing changed" in screen_text(view, size)
    for key in ["x", "down", "end", *["backspace"] * 13]:
        view.keypress(size, key)
    assert "> timezone.zone" in screen_text(view, size)
    view.keypress(size, "enter")
    assert saved == [{"hostname.name": "web01x", "timezone.zone": None}]
    view.keypress(size, "tab")
    view.keypress(size, "right")
    view.keypress(size, "enter")  # Back
    view.keypress(size, "esc")
    assert saved[1:] == ["back", "back"]


# ---------------------------------------------------------------------------- Compact

def compact_screen(eng: FakeEngine, tmp_path: Path, *keys: str) -> App:
    """The Compact plan as the controller builds it, in the App's frame."""
    host = SyncHost()
    Controller(host, eng, decision_path=str(tmp_path / "d"),  # type: ignore[arg-type]
               auth=password_system(tmp_path)).start()
    host.press("k", *keys)
    return app_with(host.views[-1])


@pytest.mark.parametrize("size", SIZES)
def test_the_compact_plan_fits(size: tuple[int, int], tmp_path: Path) -> None:
    eng = FakeEngine(tuple(f"20261120-0930{i:02}-inc" for i in range(18)))
    app = compact_screen(eng, tmp_path)
    screen = render_app(app, size)
    text = "\n".join(screen)
    assert len(screen) == size[1] and all(len(r) == size[0] for r in screen)
    assert "Compact restore points" in screen[1]
    for line in ("merged:    20261120-093001-inc..20261120-093017-inc (17 restore points)",
                 "becomes:   20261120-093000-inc -> (the new image)",
                 "depth:     18 images now, 2 after",
                 "space:     needs about 68.0 MiB free (80.0 GiB free now)",
                 "kept:      the merged restore points, in the store",
                 "Description:", "Name (empty: automatic):",
                 "[ Compact ]     [ Start from... ]     [ Cancel ]"):
        assert line in text, line
    assert screen[-1].rstrip() == " Type, then Enter  Tab/Down: buttons  PgUp/PgDn: scroll" \
        "  Esc: back"
    assert "warning" not in attrs_of(app.frame, size, "space:")
    app.frame.keypress(size, "page down")  # from the name: the list's end shows whole
    screen = render_app(app, size)
    assert "Merged, bottom first:" in "\n".join(screen)
    end = next(i for i, r in enumerate(screen) if r.startswith("-----"))
    assert [r.strip() for r in screen[:end] if r.strip()][-1] == \
        "20261120-093016-inc -> 20261120-093017-inc"


def test_the_compact_plan_warns_when_space_is_short_and_picks_in_a_deep_stack(
        tmp_path: Path) -> None:
    eng = FakeEngine(tuple(f"20261120-0930{i:02}-inc" for i in range(18)))
    eng.status = lambda: make_status(tuple(eng.tab), free=8 << 20)  # type: ignore[method-assign]
    app = compact_screen(eng, tmp_path)
    assert "warning" in attrs_of(app.frame, (80, 24), "space:")
    assert "(8.0 MiB free now)" in "\n".join(render_app(app, (80, 24)))
    app = compact_screen(eng, tmp_path, "tab", "tab", "right", "enter")  # Start from...
    screen = render_app(app, (80, 24))
    text = "\n".join(screen)
    assert all(len(r) == 80 for r in screen)
    assert ("The stack is: 20261120-093000-inc -> 20261120-093001-inc -> 20261120-093002-inc"
            " -> 20261120-093003-inc -> (13 more) -> 20261120-093017-inc"
            in " ".join(text.split()))
    assert "> 20261120-093016-inc" in text
    assert "[merges 2, 17 images after]" in text
