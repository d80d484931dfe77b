"""The controller's Compact restore points, over an in-memory engine and a synchronous host:
the plan shown, root's password asked once there is one, the lowest restore point picked,
the merge with its progress and the stack after it, a cancel, a failure, the depth notice,
a stack on trial kept on trial. The plan's layout is in tests/test_screens_views.py."""

from __future__ import annotations

from pathlib import Path

from tests.menu_doubles import SyncHost
from tests.menu_fakes import FakeEngine, password_system
from tests.menu_views_kit import start


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
