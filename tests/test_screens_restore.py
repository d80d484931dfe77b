"""The controller's Restore System, Roll back, Delete and Undo, over an in-memory engine and
a synchronous host: whole flows driven by keys, asserted on the rendered screen and the
engine calls made: what each discards or sets aside and puts back, the saved settings
written and those kept as they are now, the word typed to go ahead, the action queued for
the next boot; the pickers' tags. The other flows are in tests/test_screens_controller.py."""

from __future__ import annotations

from pathlib import Path

from maintenance.errors import InUse, StoreError
from tests.menu_doubles import SyncHost
from tests.menu_fake_state import FakeState
from tests.menu_fakes import FakeEngine
from tests.menu_views_kit import start


def typed(host: SyncHost, word: str) -> None:
    host.press(*word, "enter")


def test_restore_explains_then_needs_restore_typed(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("r")
    text = host.text()
    assert "Restore System" in text
    assert "3 new or changed files" in text
    assert "/home: every user's files" in text
    assert "the image stack: base -> apps" in text
    assert "Saved settings, from capture 20261120T093000Z-boot (2026-11-20 09:30):" in text
    host.press("page down")  # the discarded paths come last: the list may be long
    text = host.text()
    assert "changed  /etc/file0" in text and "changed  /etc/file2" in text
    assert "/etc/hostname (hostname): web01, unchanged" in text
    assert "preserved" not in text and "keep current" not in text  # nothing to choose
    typed(host, "yes")
    assert "restore" not in eng.calls
    host.press(*["backspace"] * 3)
    shown = eng.restore_plan()
    typed(host, "RESTORE")
    assert "restore" in eng.calls and eng.kept == ()
    # the figures the confirmation showed are the ones reported: the engine counts nothing
    assert eng.restore_shown == shown and shown.changed == 3
    text = host.text()
    assert "System restored" in text
    assert "Saved settings written: /etc/hostname, /etc/hosts, /etc/timezone," in text
    assert "Kept as they were" not in text
    assert "The writable layer is now fresh: it holds only the saved settings." in text
    host.press("enter")
    assert len(host.views) == 1 and "Continue booting" in host.text()
    assert host.exit_code is None


def test_restore_marks_a_deleted_hostname_and_writes_the_captured_one(tmp_path: Path
                                                                      ) -> None:
    eng = FakeEngine()
    eng.state.now["/etc/hostname"] = "(deleted)"
    _ctl, host, _ = start(tmp_path, eng)
    host.press("r")
    screen = host.text().splitlines()
    i = screen.index(next(r for r in screen if "/etc/hostname (hostname)" in r))
    assert screen[i + 1].strip() == "! now:     (deleted)"
    assert screen[i + 2].strip() == "written: web01 (deleted -> restored from the capture)"
    assert "keep current" not in host.text()  # a deleted value is never kept
    eng.state.warnings = ("/etc/timezone: cannot be written: No space left on device",)
    typed(host, "RESTORE")
    assert eng.kept == () and eng.state.now["/etc/hostname"] == "web01"
    text = host.text()
    assert "Saved settings written: /etc/hostname," in text
    assert "! /etc/timezone: cannot be written: No space left on device" in text


def changed_system(eng: FakeEngine) -> FakeEngine:
    """The running system changed its hostname and an SSH host key since the capture."""
    eng.state.now["/etc/hostname"] = "web02"
    eng.state.now["/etc/hosts"] = "127.0.1.1 web02"
    eng.state.now["/etc/ssh/ssh_host_ed25519_key"] = "sha256 9f8e7d6c"
    return eng


def test_keep_current_passes_the_choice_to_restore(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path, changed_system(FakeEngine()))
    host.press("r", "tab")  # to the first box, scrolled into view
    text = host.text()
    assert "> [ ] keep current hostname" in text
    assert "now:     127.0.1.1 web02" in text
    assert "written: 127.0.1.1 web01 (restored from the capture)" in text
    assert text.count("keep current hostname") == 1  # one box for both files
    assert "  [ ] keep current file" in text
    host.press(" ")
    assert "> [X] keep current hostname" in host.text()
    typed(host, "RESTORE")  # letters go back to the word
    assert eng.kept == ("hostname",)
    text = host.text()
    assert "Kept as they were: /etc/hostname, /etc/hosts" in text
    assert "Saved settings written: /etc/timezone, /etc/machine-id," in text
    assert eng.state.now["/etc/hostname"] == "web02"


def test_restore_without_a_capture_says_the_image_is_used(tmp_path: Path) -> None:
    eng = FakeEngine()
    eng.state = FakeState(captured=False)
    _ctl, host, _ = start(tmp_path, eng)
    host.press("r")
    text = host.text()
    assert "no capture of them exists yet: each path gets the image's file" in text
    assert "from capture" not in text


def test_unreadable_state_still_lets_restore_go_ahead(tmp_path: Path) -> None:
    eng = FakeEngine()
    eng.fail["state_plan"] = StoreError("state/captures/x/values: unparsable")
    _ctl, host, _ = start(tmp_path, eng)
    host.press("r")
    text = host.text()
    assert "Saved settings:" in text
    assert "they cannot be read: state/captures/x/values: unparsable" in text
    del eng.fail["state_plan"]
    typed(host, "RESTORE")
    assert "System restored" in host.text() and eng.kept == ()


def test_cancelled_restore_changes_nothing(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("r", "R", "E", "esc")
    assert len(host.views) == 1 and "Continue booting" in host.text()
    assert "restore" not in eng.calls and len(eng.layer) == 3


def test_rollback_confirm_and_cancel(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path, FakeEngine(("base", "apps", "tuned")))
    host.press("b")
    text = host.text()
    assert "Roll back to..." in text and "The current stack is: base -> apps -> tuned" in text
    assert "tuned " not in text.split("newest first):")[1]  # the top is not a target
    host.press("enter")  # apps
    text = host.text()
    assert "The stack becomes: base -> apps" in text
    assert "including tuned (roll forward" in text
    assert "3 new or changed files" in text
    assert "Saved settings, from capture 20261120T093000Z-boot" in text
    assert eng.calls.count("state_plan") == 1
    host.press("esc")
    assert "rollback" not in eng.calls and eng.tab == ["base", "apps", "tuned"]
    host.press("enter")
    typed(host, "ROLLBACK")
    assert eng.tab == ["base", "apps"] and eng.kept == ()
    assert "The stack is now: base -> apps" in host.text()
    host.press("enter")
    assert len(host.views) == 1


def test_rollback_keeps_the_current_value_when_ticked(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path, changed_system(FakeEngine(("base", "apps", "tuned"))))
    host.press("b", "enter", "tab", "down")  # the second box: the SSH host key
    assert "> [ ] keep current file" in host.text()
    host.press(" ")
    typed(host, "ROLLBACK")
    assert eng.tab == ["base", "apps"]
    assert eng.kept == ("/etc/ssh/ssh_host_ed25519_key",)
    assert eng.state.now["/etc/ssh/ssh_host_ed25519_key"] == "sha256 9f8e7d6c"
    assert eng.state.now["/etc/hostname"] == "web01"


def test_delete_only_offers_images_outside_the_stack(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("d")
    assert "No restore point can be deleted now" in host.text()
    host.press("enter")
    eng.tab = ["base"]
    host.press("d")
    text = host.text()
    assert "apps " in text and "base " not in text.split("newest first):")[1]
    host.press("enter")
    assert "Deleted for good:" in host.text() and "apps: incremental image" in host.text()
    typed(host, "DELETE")
    assert "apps" not in eng.metas
    assert "Deleted apps; freed 4.0 MiB." in host.text()


def test_queued_restore_and_rollback_keep_the_choices(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path, changed_system(FakeEngine(("base", "apps", "tuned"))))
    live = InUse("the writable layer is in use by the overlay on /")
    eng.fail["restore"] = live
    host.press("r", "tab", " ", *"RESTORE", "enter")
    assert "[ Queue for the next boot ]" in host.text()
    host.press("right", "enter")
    assert (eng.queued, eng.queued_keep) == (("restore", None, ""), ("hostname",))
    assert "The next boot runs restore before it builds the root." in host.text()
    host.press("enter")
    eng.fail["rollback"] = live
    host.press("b", "enter", "tab", "down", " ", *"ROLLBACK", "enter")
    host.press("right", "enter")
    assert (eng.queued, eng.queued_keep) == (("rollback", "apps", ""),
                                             ("/etc/ssh/ssh_host_ed25519_key",))
    assert eng.tab == ["base", "apps", "tuned"]  # nothing rolled back now


# ---------------------------------------------------------------------------- Undo

def test_undo_is_disabled_and_says_why_when_nothing_was_set_aside(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    text = host.text()
    assert "  u Undo: nothing to undo" in text and "Undo Restore" not in text
    host.press("down", "down")  # the disabled entry cannot take the focus
    assert "> f Create Full Restore Point" in host.text()
    host.press("u")
    text = host.text()
    assert "Nothing to undo: no writable layer was set aside (by Restore System," in text
    assert "or ibi purge deleted it." in text
    assert "undo" not in eng.calls and "restore_plan" not in eng.calls
    host.press("enter")
    assert host.dialog_widget is None and len(host.views) == 1


def test_undo_puts_back_the_layer_restore_set_aside(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    typed(host, "r" + "RESTORE")
    text = " ".join(host.text().split())  # the words, whatever the wrapping
    assert "set aside in /d/trash/20261120-093001-layer (Undo puts it back; ibi purge" in text
    host.press("enter")
    assert eng.layer == [] and "> c Continue booting" in host.text()
    assert "  u Undo Restore / Roll back" in host.text()
    host.press("u")
    text = host.text()
    assert "Undo puts back the writable layer that the last Restore System, Roll back," in text
    assert "Put back: the layer set aside in trash/20261120-093001-layer:" in text
    assert "  3 new or changed files, 0 deleted paths, 900 B" in text
    assert "The stack stays: base -> apps" in text and "The stack becomes" not in text
    assert "Set aside in turn: the current writable layer:" in text
    i = text.index("Set aside in turn")
    assert "  empty" in text[i:] and "Undo again swaps it back" in text[i:]
    assert "Type UNDO and press Enter to go ahead:" in text
    typed(host, "undo")  # the word is exact
    assert "undo" not in eng.calls and "Type UNDO exactly" in host.text()
    host.press(*["backspace"] * 4)
    typed(host, "UNDO")
    assert "undo" in eng.calls and len(eng.layer) == 3
    text = host.text()
    assert "Undone" in text
    assert ("Put back: the writable layer from trash/20261120-093001-layer (3 new or changed"
            in text)
    assert "The stack is unchanged: base -> apps" in text
    assert "The layer it replaced was set aside in trash/20261120-093002-layer:" in text
    host.press("enter")
    assert len(host.views) == 1 and "u Undo Restore / Roll back" in host.text()


def test_undo_of_a_rollback_says_which_stack_comes_back(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path, FakeEngine(("base", "apps", "tuned")))
    host.press("b", "enter")
    typed(host, "ROLLBACK")
    text = host.text()
    assert "Undo puts it back" in text
    assert ("It is on trial: a boot of it must complete within 3 boots, else the boot falls"
            " back to [base apps tuned]." in " ".join(text.split()))
    host.press("enter")
    assert "i On trial (rollback): 0 of 3 boots used; falls back to [base apps tuned]" \
        in host.text()
    host.press("u")  # back to the stack the trial falls back to: it ends the trial
    text = host.text()
    assert "The stack becomes: base -> apps -> tuned" in text
    assert "(now: base -> apps)" in text
    assert "It is the last good stack: the trial of the current one ends." in text
    host.press("esc")
    eng.on_trial = None  # a boot of [base apps] completed: it is the good stack now
    host.press("u")
    text = " ".join(host.text().split())
    assert "The stack becomes: base -> apps -> tuned (now: base -> apps)" in text
    assert ("Like a Switch, it is on trial (unless boot trials are off): if no boot of it "
            "completes, the boot falls back to [base apps]." in text)
    typed(host, "UNDO")
    assert eng.tab == ["base", "apps", "tuned"]
    text = " ".join(host.text().split())
    assert "The stack is now: base -> apps -> tuned (was: base -> apps)" in text
    assert ("It is on trial: a boot of it must complete within 3 boots, else the boot falls"
            " back to [base apps]." in text)
    host.press("enter")
    assert "On trial (undo): 0 of 3 boots used; falls back to [base apps]" in host.text()


def test_undo_in_a_booted_system_is_queued_for_the_next_boot(tmp_path: Path) -> None:
    eng = FakeEngine()
    eng.aside.append(("20261119-120000-layer", ["base", "apps"], []))
    eng.fail["undo"] = InUse("busy: the writable layer is in use by the overlay on /",
                             hint="run this from Maintenance Mode, or queue it with "
                             "--next-boot")
    _ctl, host, _ = start(tmp_path, eng)
    host.press("u")
    assert "Put back: the layer set aside in trash/20261119-120000-layer:" \
        in host.text()
    typed(host, "UNDO")
    text = host.text()
    assert "busy: the writable layer is in use by the overlay on /" in text
    assert "[ Queue for the next boot ]" in text
    host.press("right", "enter")
    assert eng.queued == ("undo", None, "") and eng.queued_keep == ()
    text = " ".join(host.text().split())
    assert "Queued for the next boot" in text
    assert "The next boot puts the set-aside writable layer back (Undo) before it builds " \
        "the root." in text
    assert "Cancel it with: ibi pending --cancel" in text
    assert eng.aside and eng.tab == ["base", "apps"]  # nothing done now


def test_undo_of_a_layer_purged_meanwhile_says_nothing_to_undo(tmp_path: Path) -> None:
    eng = FakeEngine()
    eng.aside.append(("20261119-120000-layer", ["base", "apps"], []))
    _ctl, host, _ = start(tmp_path, eng)
    eng.aside.clear()  # ibi purge, from another console
    host.press("u")
    assert "Nothing to undo" in host.text() and len(host.views) == 1
    assert "undo" not in eng.calls


def test_pinned_images_are_tagged_in_the_pickers(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "apps", "tuned"))
    eng.pinned.add("base")
    _ctl, host, _ = start(tmp_path, eng)
    host.press("l")
    assert "[in the stack, pinned; needed by apps, tuned]" in host.text()
    host.press("esc")
    eng.tab = ["base", "apps"]
    host.press("d")
    text = host.text()
    assert "pinned ones" in text and "tuned " in text
    eng.tab = ["apps"]
    host.press("esc", "d")
    assert "base " not in host.text().split("these can.")[1]  # its delete is blocked
