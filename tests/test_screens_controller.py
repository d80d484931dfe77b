"""The controller over an in-memory engine and a synchronous host: whole flows driven by
keys, asserted on the rendered screen, the engine calls made and the decision file."""

from __future__ import annotations

from pathlib import Path

import pytest

from maintenance.auth import Auth
from maintenance.errors import InUse, NoSpace, StoreError
from screens import decision
from screens.controller import Controller
from tests.menu_fakes import FakeEngine, FakeState, SyncHost, password_system


def start(tmp_path: Path, engine: FakeEngine | None = None, auth: Auth | None = None
          ) -> tuple[Controller, SyncHost, FakeEngine]:
    host = SyncHost()
    eng = engine or FakeEngine()
    ctl = Controller(host, eng, decision_path=str(tmp_path / "decision"),  # type: ignore[arg-type]
                     auth=auth or password_system(tmp_path))
    ctl.start()
    return ctl, host, eng


def typed(host: SyncHost, word: str) -> None:
    host.press(*word, "enter")


def test_continue_booting_writes_normal(tmp_path: Path) -> None:
    _ctl, host, _eng = start(tmp_path)
    assert "> c Continue booting" in host.text()
    host.press("enter")
    assert host.exit_code == decision.EXIT_NORMAL == 0
    assert (tmp_path / "decision").read_text() == "normal\n"


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


def test_create_incremental_with_progress_and_result(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("i")
    assert "Create Incremental Restore Point" in host.text()
    assert "The writable layer holds: 37 changed files" in host.text()
    host.press(*"before upgrade", "enter")
    assert [p.done for p in host.progress] == [0, 25, 50, 75, 100]
    text = host.text()
    assert "Restore point created" in text and "incremental restore point point2" in text
    assert "Stack: base -> apps -> point2" in text
    host.press("enter")
    assert "point2" in host.text()
    assert eng.metas["point2"].description == "before upgrade"


def test_create_error_is_a_dialog_and_the_menu_carries_on(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path, FakeEngine(changes=0))
    host.press("i", "enter")
    text = host.text()
    assert "Error: the action failed" in text
    assert "the writable layer is empty: nothing to put in an incremental" in text
    assert "Traceback" not in text
    host.press("enter")
    assert host.dialog_widget is None and "Continue booting" in host.text()
    eng.fail["create"] = NoSpace("not enough space to squash the whole system: needs 3 GiB",
                                 hint="free space (ibi purge, ibi delete) and try again")
    host.press("f", "enter")
    assert "not enough space to squash the whole system" in host.text()
    assert "free space (ibi purge" in host.text()


def test_internal_error_shows_one_line(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    eng.fail["verify"] = RuntimeError("boom")
    host.press("v")
    text = host.text()
    assert "internal error: RuntimeError: boom" in text and "Traceback" not in text


def test_live_review_writes_review_decision(tmp_path: Path) -> None:
    _ctl, host, _eng = start(tmp_path, FakeEngine(("base", "apps", "tuned")))
    host.press("l")
    text = host.text()
    assert "Live Review" in text and "top of the stack" in text
    assert text.index("tuned") < text.index("apps") < text.index("base  ")  # newest first
    host.press("down", "down", "enter")
    text = host.text()
    assert "Live Review of base" in text
    assert "tmpfs" in text and "/home is your real /home" in text and "Nothing is kept" in text
    host.press("esc")
    assert "Choose the restore point" in host.text()
    host.press("up", "enter", "enter")
    assert host.exit_code == decision.EXIT_REVIEW == 10
    assert decision.read_decision(tmp_path / "decision") == ("review", "apps")


def test_live_review_of_a_point_with_another_kernel_restarts_into_it(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "apps"))
    eng.kernels["base"] = "6.1.0-9-amd64"
    _ctl, host, _eng = start(tmp_path, eng)
    host.press("l", "down", "enter")
    text = host.text()
    assert "base runs Linux 6.1.0-9-amd64, not the kernel running now" in text
    assert "Restart into Live Review" in text
    host.press("enter")
    assert eng.next_entry == "ibi-review-base"
    assert host.exit_code == decision.EXIT_REBOOT
    assert decision.read_decision(tmp_path / "decision") == ("reboot", None)


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


def test_verify_reports_each_image(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "bad"))
    _ctl, host, _ = start(tmp_path, eng)
    host.press("v")
    text = host.text()
    assert "1 of 2 images have problems" in text
    assert "ok      base" in text and "FAILED  bad: checksum mismatch" in text


def test_broken_store_opens_with_rescue_actions(tmp_path: Path) -> None:
    eng = FakeEngine(broken=True)
    _ctl, host, _ = start(tmp_path, eng)
    text = host.text()
    assert "The image store cannot be used" in text
    assert "/d holds no ibi store (.root_images/roottab is missing)" in text
    assert "Create Full" not in text
    host.press("r")
    assert "Error: the action failed" in host.text()
    host.press("esc", "s")
    assert host.shells == 1
    host.press("enter")
    assert host.exit_code == 0


def test_decision_write_failure_is_shown_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    host = SyncHost()
    ctl = Controller(host, FakeEngine(), decision_path=str(tmp_path / "file" / "decision"),  # type: ignore[arg-type]
                     auth=password_system(tmp_path))
    ctl.start()
    host.press("enter")
    assert host.exit_code is None
    assert "cannot write the decision file" in host.text()


def test_details_lists_the_layer(tmp_path: Path) -> None:
    _ctl, host, _eng = start(tmp_path)
    host.press("w")
    text = host.text()
    assert "The writable layer (what Restore System discards)" in text
    assert "/etc/file1" in text
    host.press("esc")
    assert len(host.views) == 1


def test_decision_file_is_atomic_and_strict(tmp_path: Path) -> None:
    p = tmp_path / "d" / "decision"
    assert decision.write_decision(p, "review", "base") == "review base"
    assert p.read_text() == "review base\n"
    decision.write_decision(p, "normal")
    assert decision.read_decision(p) == ("normal", None)
    assert sorted(x.name for x in p.parent.iterdir()) == ["decision"]  # no temp left
    decision.write_decision(p, "poweroff")
    assert decision.read_decision(p) == ("poweroff", None)
    for bad in (("review", None), ("review", "a b"), ("reboot", "x"), ("halt", None)):
        with pytest.raises(ValueError):
            decision.write_decision(p, *bad)


def test_live_layer_offers_to_queue_for_next_boot(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    live = InUse("the writable layer is in use by the overlay on /",
                 hint="run this from Maintenance Mode, or queue it with --next-boot")
    eng.fail["create"] = live
    host.press("i", *"nightly", "tab", *"night", "enter")
    text = host.text()
    assert "the writable layer is in use by the overlay on /" in text
    assert "[ Queue for the next boot ]" in text
    host.press("right", "enter")
    assert eng.queued == ("incremental", "night", "nightly")
    assert "Queued for the next boot" in host.text()
    host.press("enter")
    eng.fail["restore"] = live
    host.press("r", *"RESTORE", "enter")
    assert "[ Queue for the next boot ]" in host.text()
    host.press("enter")  # OK: nothing queued
    assert host.dialog_widget is None and eng.queued[0] == "incremental"


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


@pytest.mark.parametrize("exc", [OSError(5, "Input/output error"), ValueError("bad yaml")])
def test_unforeseen_status_failure_still_opens_the_menu(tmp_path: Path,
                                                        exc: Exception) -> None:
    eng = FakeEngine()
    eng.fail["status"] = exc
    _ctl, host, _ = start(tmp_path, eng)
    text = host.text()
    assert "The image store cannot be used" in text and "cannot read the store" in text
    assert str(exc.args[-1]) in text and "> c Continue booting" in text


def test_reboot_and_poweroff_are_decisions(tmp_path: Path) -> None:
    _ctl, host, _eng = start(tmp_path)
    host.press("e")
    assert host.exit_code == decision.EXIT_REBOOT == 11
    assert (tmp_path / "decision").read_text() == "reboot\n"
    _ctl, host, _eng = start(tmp_path, FakeEngine(broken=True))
    host.press("o")
    assert host.exit_code == decision.EXIT_POWEROFF == 12
    assert (tmp_path / "decision").read_text() == "poweroff\n"


def test_boot_error_is_shown_first(tmp_path: Path) -> None:
    for eng in (FakeEngine(), FakeEngine(broken=True)):
        host = SyncHost()
        Controller(host, eng, decision_path=str(tmp_path / "d"),  # type: ignore[arg-type]
                   auth=password_system(tmp_path),
                   boot_error="roottab.prev: image 'x' is missing").start()
        text = host.text()
        assert "the boot failed" in text.lower()
        assert "roottab.prev: image 'x' is missing" in text


def test_saved_settings_shows_values_and_captures(tmp_path: Path) -> None:
    eng = FakeEngine()
    eng.state.capture("save", eng.state.values())
    _ctl, host, _ = start(tmp_path, eng)
    assert "t Saved settings (state)..." in host.text()
    host.press("t")
    text = host.text()
    assert "Last capture: 20261120T103000Z-save" in text
    assert "made 2026-11-20 10:30 (by ibi state save); 1 older capture kept" in text
    assert "> hostname.name   web01" in text  # the first field has the focus
    assert "timezone.zone   Europe/Berlin" in text
    assert "the host name: letters, digits and '-', 1 to 63 (/etc/hostname, /etc/hosts)" in text
    assert "Kept byte for byte (stash)" in text and "/etc/ssh/ssh_host_ed25519_key" in text
    host.press("esc")
    assert len(host.views) == 1 and "state_set" not in eng.calls


def test_save_passes_the_edited_value(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("t", *["backspace"] * 5, *"web02", "enter")
    assert eng.calls[-1] == "state_set"
    assert eng.state.values()["hostname.name"] == "web02"
    assert eng.state.values()["timezone.zone"] == "Europe/Berlin"  # untouched
    text = host.text()
    assert "Settings saved" in text
    assert "New capture 20261120T103000Z-set, made 2026-11-20 10:30:" in text
    assert "hostname.name = web02" in text and "timezone" not in text
    host.press("enter")
    assert len(host.views) == 1 and "Continue booting" in host.text()
    host.press("t")
    assert "hostname.name   web02" in host.text()


def test_an_emptied_field_removes_the_value(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("t", "down", "end", *["backspace"] * 13, "tab", "enter")  # Save, by its button
    assert eng.state.values()["timezone.zone"] is None
    assert "timezone.zone: removed (the image's file)" in host.text()


def test_a_refused_value_is_shown_and_the_fields_keep_it(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("t", *["backspace"] * 5, *"bad name!", "enter")
    text = host.text()
    assert "Error: the action failed" in text
    assert "hostname.name: 'bad name!' is not a host name" in text
    assert len(eng.state.captures) == 1  # no capture made
    host.press("enter")  # OK
    assert host.dialog_widget is None
    assert "hostname.name   bad name!" in host.text()
    host.press(*["backspace"] * 9, *"good", "enter")
    assert eng.state.values()["hostname.name"] == "good"


def test_save_with_nothing_changed_makes_no_capture(tmp_path: Path) -> None:
    _ctl, host, eng = start(tmp_path)
    host.press("t", "enter")
    assert "Nothing changed: no new capture is made." in host.text()
    assert "state_set" not in eng.calls


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


# ---------------------------------------------------------------------------- Compact

def flat(host: SyncHost) -> str:
    """The screen's words, whatever the wrapping."""
    return " ".join(host.text().split())


def test_compact_shows_the_plan_then_merges_with_progress(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "apps", "tuned", "extra"))
    _ctl, host, _ = start(tmp_path, eng)
    assert "k Compact restore points" in host.text()
    host.press("k")
    text = host.text()
    assert "Compact restore points" in text
    assert ("Merges 3 restore points at the top of the stack into one new image: the stack "
            "goes from 4 images to 2" in flat(host))
    assert "merged:    apps..extra (3 restore points), 12.0 MiB" in text
    assert "becomes:   base -> (the new image)" in text
    assert "depth:     4 images now, 2 after" in text
    assert "space:     needs about 12.0 MiB free (80.0 GiB free now)" in text
    assert "the merged restore points, in the store" in text
    assert "the writable layer, untouched; /home" in flat(host)
    assert "[ Compact ]" in text and "[ Start from... ]" in text and "[ Cancel ]" in text
    assert "press Enter to go ahead" not in text  # no word to type: it discards nothing
    host.press("page down")
    assert "apps -> tuned -> extra" in host.text()  # every one merged, by name
    host.press(*"Nov updates", "tab", *"merged", "enter")
    assert eng.compacted == ("apps", "extra", "merged", "Nov updates")  # the run as shown
    assert [p.phase for p in host.progress] == ["squashing", "checking", "verifying"]
    text = flat(host)
    assert "Restore points compacted" in text
    assert "Merged apps..extra (3 restore points) into merged (12.0 MiB)." in text
    assert "The stack is now: base -> merged (2 images deep; it was 4)" in text
    assert "The writable layer is untouched." in text and "It stays on trial" not in text
    host.press("enter")
    text = host.text()
    assert len(host.views) == 1 and "2  merged" in text and "3  tuned" not in text
    assert "not in the stack: apps, tuned, extra" in text
    assert eng.tab == ["base", "merged"] and len(eng.layer) == 3  # the layer as it was


def test_compact_with_nothing_to_merge_says_so_without_a_password(tmp_path: Path) -> None:
    from maintenance.auth import hash_root_password

    auth = password_system(tmp_path, hash_root_password("pw", "$6$"))
    _ctl, host, eng = start(tmp_path, FakeEngine(("base", "apps")), auth)
    host.press("k")
    assert "nothing to compact: the run from apps to the top is one image" in host.text()
    assert "Error" not in host.text() and "password" not in host.text()
    assert "compact" not in eng.calls
    host.press("enter")
    assert host.dialog_widget is None and len(host.views) == 1
    eng.tab = ["base"]
    host.press("k")
    assert "nothing to compact: the stack is one image" in host.text()


def test_compact_asks_for_the_password_once_there_is_a_plan(tmp_path: Path) -> None:
    from maintenance.auth import hash_root_password

    auth = password_system(tmp_path, hash_root_password("pw", "$6$"))
    _ctl, host, eng = start(tmp_path, FakeEngine(("base", "apps", "tuned")), auth)
    host.press("k")
    assert "Compact restore points needs root's password." in flat(host)
    host.press("esc")
    assert host.dialog_widget is None and len(host.views) == 1
    host.press("k", *"pw", "enter")
    assert "depth:     3 images now, 2 after" in host.text()
    assert "[ Start from... ]" not in host.text()  # apps is the only place to start
    host.press("tab", "tab", "enter")  # the Compact button
    assert eng.tab == ["base", "20261120-093000-compact"]
    assert eng.metas[eng.tab[-1]].description == "compacts apps..tuned (2 restore points)"


def test_compact_can_start_from_a_higher_restore_point(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "apps", "tuned", "extra", "last"))
    _ctl, host, _ = start(tmp_path, eng)
    host.press("k", "tab", "tab", "right", "enter")  # Start from...
    text = host.text()
    assert "Choose the lowest restore point to merge (newest first):" in text
    assert "The stack is: base -> apps -> tuned -> extra -> last" in flat(host)
    listed = text.split("newest first):")[1]
    assert listed.index("> extra") < listed.index("tuned ") < listed.index("apps ")
    assert "last " not in listed  # a run is two at least
    assert "[merges 2, 4 images after]" in text
    assert "[merges 4, 2 images after; chosen now]" in text
    host.press("esc")
    assert "merged:    apps..last (4 restore points)" in host.text()
    assert "> [ Start from... ]" in host.text()  # where it was left
    host.press("enter", "down", "enter")  # tuned
    assert len(host.views) == 2  # the picker and the old plan are gone
    text = host.text()
    assert "merged:    tuned..last (3 restore points), 12.0 MiB" in text
    assert "becomes:   base -> apps -> (the new image)" in text
    assert "depth:     5 images now, 3 after" in text
    assert "(now: tuned)" in flat(host)
    host.press("enter")
    assert eng.compacted == ("tuned", "last", None, "")
    assert eng.tab == ["base", "apps", "20261120-093000-compact"]
    host.press("enter")
    assert len(host.views) == 1 and "3  20261120-093000-comp " in host.text()  # clipped


def test_a_cancelled_compact_changes_nothing(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "apps", "tuned"))
    _ctl, host, _ = start(tmp_path, eng)
    host.press("k", "esc")
    assert len(host.views) == 1 and "> c Continue booting" in host.text()
    host.press("k", "tab", "tab", "right", "enter")  # the Cancel button (no Start from)
    assert len(host.views) == 1
    assert "compact" not in eng.calls and eng.tab == ["base", "apps", "tuned"]


def test_a_failed_compact_reads_the_store_again_and_says_why(tmp_path: Path) -> None:
    from maintenance.errors import IntegrityError

    eng = FakeEngine(("base", "apps", "tuned"))
    eng.fail["compact"] = IntegrityError(
        "the merged image differs from the run it replaces (1 finding(s); first: /etc: "
        "x missing)", hint="nothing was changed; please report this")
    _ctl, host, _ = start(tmp_path, eng)
    host.press("k", "enter")
    text = flat(host)
    assert "Error: the action failed" in text
    assert "the merged image differs from the run it replaces" in text
    assert "nothing was changed; please report this" in text
    assert "[ Queue for the next boot ]" not in text  # it needs no next boot
    assert eng.calls[eng.calls.index("compact") + 1] == "status"
    host.press("enter")
    assert len(host.views) == 1 and eng.tab == ["base", "apps", "tuned"]


def test_the_depth_notice_points_at_compact_until_it_is_done(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "apps", "tuned", "extra"))
    eng.max_depth = 3
    _ctl, host, _ = start(tmp_path, eng)
    text = host.text()
    assert " i The stack is 4 images deep (past the policy's bound): k compacts it" in text
    assert "ibi compact merges its restore points" not in text  # the engine's words: w
    host.press("w")
    assert "ibi compact merges its restore points into one" in flat(host)
    host.press("esc", "k", "enter", "enter")
    assert eng.tab == ["base", "20261120-093000-compact"]
    assert "images deep" not in host.text()


def test_a_stack_on_trial_stays_on_trial_when_compacted(tmp_path: Path) -> None:
    eng = FakeEngine(("base", "apps", "tuned", "extra"))
    _ctl, host, _ = start(tmp_path, eng)
    host.press("b", "enter", *"ROLLBACK", "enter", "enter")  # [base apps tuned], on trial
    host.press("k", "enter")
    text = flat(host)
    assert "It stays on trial, its boots counted as before: if no boot of it completes " \
        "within 3 boots, the boot falls back to [base apps tuned extra]." in text
    host.press("enter")
    assert "On trial (rollback): 0 of 3 boots used; falls back to [base apps tuned extra]" \
        in host.text()
