"""The main view rendered at 80x24 and 132x43 and asserted on its text: the stack, the
writable layer, the actions, the disk; the notices (a stack on trial, an automatic fallback,
the stack's depth, errors first); a broken store's rescue actions; the help; keys pressed
against a recording controller (urwid's own widget-test style: render, keypress). The other
views are in tests/test_screens_views.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from maintenance.model import Fallback, Level, Notice, Trial
from screens.main_views import RESCUE_ACTIONS, DetailsView, HelpView, MainView
from tests.menu_doubles import T0, RecordingController, make_status, notice, screen_text
from tests.menu_views_kit import SIZES, app_with, attrs_of, render_app


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
