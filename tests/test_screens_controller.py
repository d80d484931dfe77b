"""The controller over an in-memory engine and a synchronous host: whole flows driven by
keys, asserted on the rendered screen, the engine calls made and the decision file. Here:
continue booting and the other decisions, create, Live Review, verify, details, a broken
store, an action queued for the next boot, the saved settings. Restore System, Roll back,
Delete and Undo are in tests/test_screens_restore.py, Compact in
tests/test_screens_compact.py; start is in tests/menu_views_kit.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from maintenance.errors import InUse, NoSpace
from screens import decision
from screens.controller import Controller
from tests.menu_doubles import SyncHost
from tests.menu_fakes import FakeEngine, password_system
from tests.menu_views_kit import start


def test_continue_booting_writes_normal(tmp_path: Path) -> None:
    _ctl, host, _eng = start(tmp_path)
    assert "> c Continue booting" in host.text()
    host.press("enter")
    assert host.exit_code == decision.EXIT_NORMAL == 0
    assert (tmp_path / "decision").read_text() == "normal\n"


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
