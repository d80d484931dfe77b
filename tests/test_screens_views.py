"""The menu's views rendered at 80x24 and 132x43 and asserted on their text; keys pressed
against a recording controller (urwid's own widget-test style: render, keypress)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import urwid

from maintenance.model import Fallback, Level, Notice, Progress, Trial
from screens.app import App
from screens.controller import Controller
from screens.main_views import RESCUE_ACTIONS, DetailsView, HelpView, MainView
from screens.state_views import StateTable, StateView
from screens.views import (
    KEEP_FOOTER,
    ConfirmView,
    CreateView,
    Dialog,
    PickerView,
    ProgressView,
)
from tests.menu_fakes import (
    T0,
    FakeEngine,
    FakeState,
    RecordingController,
    SyncHost,
    make_status,
    notice,
    password_system,
    rows,
    screen_text,
)

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


@pytest.mark.parametrize("size", SIZES)
def test_main_view_shows_stack_layer_actions_disk(size: tuple[int, int]) -> None:
    ctl = RecordingController()
    screen = render_app(app_with(MainView(ctl, make_status())), size)
    text = "\n".join(screen)
    assert len(screen) == size[1] and all(len(r) == size[0] for r in screen)
    assert screen[0].startswith(" ibi Maintenance Mode") and "data: /d" in screen[0]
    assert "Image stack, bottom first" in text
    names = [r.split()[1] for r in screen if r[:2].strip() in ("1", "2", "3")]
    assert names == ["base", "apps", "tuned"]  # bottom first
    layer = next(r for r in screen if "writable layer" in r)
    assert "70.0 MiB in 37 changed files, 5 deleted" in layer
    assert "2026-11-21 09:30" in text and "incremental" in text
    assert screen.index(layer) > max(i for i, r in enumerate(screen) if "tuned" in r)
    for label in ("Continue booting", "Restore System", "Create Full Restore Point",
                  "Create Incremental Restore Point", "Live Review...", "Roll back to...",
                  "Delete restore point...", "Compact restore points",
                  "Saved settings (state)...", "Verify images",
                  "Shell", "Reboot", "Power off"):
        assert label in text, label
    assert "> c Continue booting" in text  # the default has the focus
    assert "Data partition" in text and "used" in text and "20.0 GiB/100.0 GiB" in text
    assert "images" in text and "12.0 MiB" in text
    assert "RAM" not in text  # no tmpfs upper in play
    assert "?: help" in screen[-1]


def test_main_view_wide_shows_whole_description() -> None:
    text = "\n".join(render_app(app_with(MainView(RecordingController(), make_status())),
                                (132, 43)))
    assert "tuned description" in text
    assert "37 changed files, 5 deleted" in text


def test_chain_problem_flagged_in_place() -> None:
    st = make_status(problem={"apps": "made on [x] but stacked on [base]"})
    screen = render_app(app_with(MainView(RecordingController(), st)), (80, 24))
    i = next(i for i, r in enumerate(screen) if "! apps" in r)
    assert "! made on [x] but stacked on [base]" in screen[i + 1]


def test_kernels_shown_where_they_change_and_in_the_layer() -> None:
    import dataclasses

    st = make_status()
    ks = [("6.1.0-9-amd64",), ("6.1.0-9-amd64",), ("6.12.9-amd64", "6.1.0-9-amd64")]
    stack = tuple(dataclasses.replace(e, kernels=k) for e, k in zip(st.stack, ks, strict=True))
    st = dataclasses.replace(st, stack=stack, layer_kernels=("6.13.1-amd64",))
    # where the whole stack shows (at 80x24 its bottom scrolls away under 14 actions)
    screen = render_app(app_with(MainView(RecordingController(), st)), (132, 43))
    text = "\n".join(screen)
    assert text.count("boots Linux 6.1.0-9-amd64") == 1  # base; apps keeps it
    i = next(i for i, r in enumerate(screen) if " tuned " in r)
    assert "boots Linux 6.12.9-amd64" in screen[i + 1]
    assert "Linux 6.13.1-amd64 installed in the layer: booted next" in text


def test_low_space_warning_and_ram_bars() -> None:
    st = make_status(free=1 << 28, tmpfs=True, notices=(
        Notice(Level.WARNING, "low-space", {"free": 1 << 28, "total": 100 << 30}),
        Notice(Level.INFO, "trash", {"bytes": 3 << 20})))
    text = "\n".join(render_app(app_with(MainView(RecordingController(), st)), (80, 24)))
    assert " ! low space on the data partition: 256.0 MiB free" in text
    assert " i 3.0 MiB of set-aside layers" in text
    assert "RAM" in text and "4.0 GiB/16.0 GiB" in text
    assert "tmpfs" in text and "1.0 GiB/8.0 GiB" in text


def test_many_notices_are_capped_and_errors_come_first() -> None:
    notes = (*(notice(Level.INFO, f"note {i}") for i in range(5)),
             notice(Level.ERROR, "roottab is unreadable"))
    text = "\n".join(render_app(app_with(MainView(RecordingController(),
                                                  make_status(notices=notes))), (80, 24)))
    assert "!! roottab is unreadable" in text
    assert "... 3 more: press w" in text
    assert "note 4" not in text


def on_trial(boots: int = 1, failure: str = "", notices: tuple[Notice, ...] = ()) -> Any:
    """A status whose stack [base apps] is on trial, falling back to [base], as the engine
    reports it: the structured trial and its notice."""
    st = make_status(("base", "apps"), notices=notices)
    t = Trial(("base", "apps"), ("base",), 3, T0, "switch", failure=failure)
    engine_says = Notice(Level.WARNING if boots else Level.INFO, "trial",
                         {"boots": boots, "tries": 3, "good": ["base"], "reason": "switch",
                          "failure": failure})
    return dataclasses.replace(st, trial=t, boots=boots,
                               notices=(*st.notices, engine_says))


@pytest.mark.parametrize("size", SIZES)
def test_a_stack_on_trial_is_one_line_first_among_the_notices(size: tuple[int, int]) -> None:
    notes = (*(notice(Level.INFO, f"note {i}") for i in range(4)),
             notice(Level.ERROR, "roottab.prev is unreadable"))
    app = app_with(MainView(RecordingController(), on_trial(notices=notes)))
    screen = render_app(app, size)
    text = "\n".join(screen)
    i = next(i for i, r in enumerate(screen) if "On trial" in r)
    assert screen[i].rstrip() == " ! On trial (switch): 1 of 3 boots used; falls back to [base]"
    assert screen[i - 1].startswith("-----")  # first under the stack
    assert screen[i + 1].startswith("!! roottab.prev is unreadable")
    assert "warning" in attrs_of(app.frame, size, "On trial")
    assert "the stack is on trial (switch)" not in text  # ibi status's words: in Details
    assert "more: press w" in text and "> c Continue booting" in text
    assert "+  writable layer" in text  # the stack keeps a row


def test_a_trial_that_used_its_boots_says_the_next_boot_falls_back() -> None:
    st = on_trial(boots=3, failure="health check 50-network exited 1: no route to the "
                                   "update server at all, after 30 tries over 5 minutes")
    screen = render_app(app_with(MainView(RecordingController(), st)), (80, 24))
    text = " ".join(" ".join(screen).split())
    assert ("! On trial (switch): 3 of 3 boots used; the next boot falls back to [base]; "
            "last failure: health check 50-network exited 1: no route to the update ..." in text)
    assert "> c Continue booting" in text and "o Power off" in text
    st = dataclasses.replace(st, boots=0, notices=())
    text = "\n".join(render_app(app_with(MainView(RecordingController(), st)), (80, 24)))
    assert " i On trial (switch): 0 of 3 boots used; falls back to [base]" in text


@pytest.mark.parametrize("size", SIZES)
def test_an_automatic_fallback_is_shown_first(size: tuple[int, int]) -> None:
    fb = Fallback(("base", "new"), ("base", "apps"), 2, T0, "health check 50-fail exited 1")
    notes = (Notice(Level.WARNING, "fallback", {"failed": ["base", "new"],
                                                "good": ["base", "apps"], "boots": 2,
                                                "at": T0, "why": fb.why}),
             *(notice(Level.WARNING, f"warning {i}") for i in range(3)))
    st = dataclasses.replace(make_status(("base", "apps"), notices=notes), fallback=fb)
    app = app_with(MainView(RecordingController(), st))
    screen = render_app(app, size)
    text = " ".join(" ".join(screen).split())
    assert ("! Automatic fallback 2026-11-20 09:30: [base new] failed 2 boots; back on "
            "[base apps]" in text)
    first = next(i for i, r in enumerate(screen) if "Automatic fallback" in r)
    assert screen[first - 1].startswith("-----")
    assert "warning" in attrs_of(app.frame, size, "Automatic fallback")
    assert "ibi restore --undo returns to it" not in text  # the engine's line: in Details
    assert "warning 0" in text and "> c Continue booting" in text
    details = screen_text(DetailsView(st.notices, [], 10, lambda: None), (80, 22))
    assert "ibi restore --undo returns to it" in " ".join(details.split())


def test_pinned_images_are_tagged() -> None:
    st = dataclasses.replace(make_status(others=("old", "kept")), pinned=("base", "kept"))
    screen = render_app(app_with(MainView(RecordingController(), st)), (80, 24))
    row = next(r for r in screen if r.startswith("1  base"))
    assert row.split("MiB")[1].strip() == "[pinned] base de"  # first: the column is narrow
    assert "[pinned]" not in next(r for r in screen if r.startswith("2  apps"))
    assert "not in the stack: old, kept (pinned)" in "\n".join(screen)


def test_long_stack_keeps_its_top_in_view_at_80x24() -> None:
    names = tuple(f"point{i:02}" for i in range(14))
    screen = render_app(app_with(MainView(RecordingController(), make_status(names))),
                        (80, 24))
    text = "\n".join(screen)
    assert "writable layer" in text and "point13" in text
    assert "Shell" in text and "?: help" in screen[-1]
    assert "point00" not in text
    app = app_with(MainView(RecordingController(), make_status(names)))
    for _ in range(3):
        app.frame.keypress((80, 24), "page up")  # scrolls the stack; focus stays put
    text = "\n".join(render_app(app, (80, 24)))
    assert "1  point00" in text and "> c Continue booting" in text


@pytest.mark.parametrize("size", SIZES)
def test_broken_store_states_problem_and_rescue_actions(size: tuple[int, int]) -> None:
    view = MainView(RecordingController(), None, problem="/d holds no ibi store",
                    actions=RESCUE_ACTIONS)
    text = "\n".join(render_app(app_with(view), size))
    assert "The image store cannot be used" in text and "/d holds no ibi store" in text
    for label in ("Continue booting", "Restore System", "Roll back to...", "Shell", "Reboot",
                  "Power off"):
        assert label in text
    for label in ("Create Full", "Verify images", "Live Review", "Delete restore",
                  "Saved settings", "Compact"):
        assert label not in text
    assert "> c Continue booting" in text


def test_keys_reach_the_controller() -> None:
    ctl = RecordingController()
    view = MainView(ctl, make_status())
    size = (80, 22)
    assert view.keypress(size, "enter") is None
    assert ctl.calls == ["continue_boot"]
    for _ in range(2):
        view.keypress(size, "down")
    assert "> u Undo Restore / Roll back" in screen_text(view, size)  # next to Restore
    view.keypress(size, "down")
    assert "> f Create Full Restore Point" in screen_text(view, size)
    view.keypress(size, "enter")
    for key in ("r", "u", "i", "l", "b", "d", "k", "t", "v", "s", "e", "o", "w"):
        view.keypress(size, key)
    assert ctl.calls == ["continue_boot", "create_full", "restore", "undo",
                         "create_incremental", "live_review", "rollback", "delete", "compact",
                         "state", "verify", "shell", "reboot", "poweroff", "details"]
    assert view.keypress(size, "x") == "x"  # unknown keys go up unhandled
    assert view.keypress(size, "esc") == "esc"


def test_rescue_view_ignores_hotkeys_of_missing_actions() -> None:
    ctl = RecordingController()
    view = MainView(ctl, None, problem="broken", actions=RESCUE_ACTIONS)
    view.keypress((80, 22), "f")
    view.keypress((80, 22), "v")
    view.keypress((80, 22), "s")
    assert ctl.calls == ["shell"]


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


@pytest.mark.parametrize("size", SIZES)
def test_help_fits(size: tuple[int, int]) -> None:
    app = app_with(MainView(RecordingController(), make_status()))
    app.dialog(HelpView(lambda: None))
    screen = render_app(app, size)
    text = "\n".join(screen)
    assert "Restore System: throw the writable layer away" in text
    assert "Undo: put back the layer that Restore or Roll back set aside." in text
    assert "Shell: a root shell" in text and "[ OK ]" in text
    assert "Compact restore points: merge the stack's restore points into one image." in text
    ok = next(i for i, r in enumerate(screen) if "[ OK ]" in r)
    assert "+-----" in screen[ok + 1]  # whole: its frame closes under OK


# ---------------------------------------------------------------------------- managed state

def attrs_of(widget: urwid.Widget, size: tuple[int, int], needle: str) -> set[Any]:
    """The attributes drawn on the first row that shows ``needle``."""
    for row in widget.render(size, focus=True).content():
        if needle in b"".join(t for _a, _cs, t in row).decode():
            return {a for a, _cs, t in row if t.strip()}
    raise AssertionError(f"{needle!r} is not on the screen")


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

def deep_status(depth: int = 17, **kw: Any) -> Any:
    """A stack past the policy's bound (16), with the engine's depth notice."""
    names = ("base", *(f"p{i:02}" for i in range(1, depth)))
    note = Notice(Level.INFO, "depth", {"depth": depth, "bound": 16})
    st = make_status(names, **kw)
    return dataclasses.replace(st, notices=(*st.notices, note))


@pytest.mark.parametrize("size", SIZES)
def test_the_depth_notice_is_one_line_with_the_key(size: tuple[int, int]) -> None:
    st = deep_status(notices=(notice(Level.WARNING, "low space on the data partition"),))
    app = app_with(MainView(RecordingController(), st))
    screen = render_app(app, size)
    text = "\n".join(screen)
    i = next(i for i, r in enumerate(screen) if "images deep" in r)
    assert screen[i].rstrip() == \
        " i The stack is 17 images deep (past the policy's bound): k compacts it"
    assert screen[i - 1].startswith("-----")  # first under the stack
    assert screen[i + 1].startswith(" ! low space")
    assert "info" in attrs_of(app.frame, size, "images deep")
    assert "ibi compact merges" not in text  # ibi status's words: in Details
    assert "> c Continue booting" in text and "k Compact restore points" in text
    assert "+  writable layer" in text  # the stack keeps a row


def test_the_depth_notice_comes_after_a_trial() -> None:
    st = on_trial()
    st = dataclasses.replace(st, notices=(*st.notices, *deep_status(2).notices))
    screen = render_app(app_with(MainView(RecordingController(), st)), (80, 24))
    i = next(i for i, r in enumerate(screen) if "On trial" in r)
    assert "The stack is 2 images deep" in screen[i + 1]
    view = MainView(RecordingController(), deep_status(), actions=("continue_boot", "shell"))
    assert "images deep (past the policy's bound): ibi compact merges it" in \
        screen_text(view, (80, 22))  # no key to name


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
