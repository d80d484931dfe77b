"""End to end, as tests/test_menu_e2e.py (the real menu in a pseudo-terminal on a real store;
kit: tests/menu_e2e_kit.py): Restore queued on a live layer, Create's progress, Roll back,
Delete and Verify, Undo (and queued on a live layer), the trial and the automatic fallback,
and Compact in a booted system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maintenance.engine import Engine
from maintenance.model import Kind
from tests import menu_e2e_kit
from tests.menu_e2e_kit import change, menu_args
from tests.menu_tui import Tui

pytestmark = pytest.mark.tui

# the fixtures, by name: pytest finds them in this module
_tools = menu_e2e_kit._tools
store = menu_e2e_kit.store


@pytest.mark.root
def test_restore_on_a_live_layer_can_be_queued(store: Engine, root_ns: Path,
                                               tmp_path: Path) -> None:
    """Run in a booted system (the layer is the upper of a mounted overlay), Restore is
    refused by the engine and the menu offers to queue it for the next boot."""
    target = root_ns / "root"
    target.mkdir()
    store.mount(target)
    try:
        (target / "srv" / "live-file").write_text("live\n")
        with Tui(menu_args(store.data_dir, tmp_path)) as t:
            t.wait_for("1 changed file")
            t.press("r")
            t.wait_for("Type RESTORE")
            t.type("RESTORE")
            t.press("enter")
            t.wait_for("in use by the overlay", "[ Queue for the next boot ]")
            t.press("right", "enter")
            t.wait_for("Queued for the next boot")
            t.press("enter")
            t.wait_for("queued for the next boot: restore")
            t.press("c")
            assert t.wait_exit() == 0
        assert store.pending() is not None and store.pending()["action"] == "restore"
        assert (target / "srv" / "live-file").exists()  # nothing discarded now
    finally:
        store.umount(target)


@pytest.mark.root
def test_create_shows_real_progress(store: Engine, tmp_path: Path) -> None:
    """A restore point big enough to take a moment: the progress screen with a bar fed by
    mksquashfs's own progress shows up while the screen keeps being redrawn."""
    # many small files: mksquashfs spends its time per file (a big random file is stored
    # uncompressed in a blink)
    for d in range(20):
        sub = store.store.upper / "srv" / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(400):
            (sub / f"f{i}").write_bytes(os.urandom(2048))
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("8000 changed files")
        t.press("i")
        t.wait_for("Description:")
        t.press("enter")
        seen: set[str] = set()
        while "Restore point created" not in t.text:
            assert t.pump(0.02), "the menu exited"
            for ln in t.screen.display:
                if "Creating an incremental restore point" in ln:
                    seen.add("view")
                if "%  squashing" in ln or "%  verifying" in ln:
                    seen.add(ln.split("%")[1].split()[0])
                if "elapsed" in ln:
                    seen.add("clock")
        assert {"view", "clock"} <= seen, seen
        assert seen & {"squashing", "verifying"}, seen
        t.press("enter")
        t.wait_for("0 changed files")
        t.press("c")
        assert t.wait_exit() == 0


@pytest.mark.root
def test_rollback_refused_delete_full_point_and_verify(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/second", "2\n")
    store.create(Kind.INCREMENTAL, name="second")
    change(store, "srv/after", "3\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("second", "1 changed file")
        t.press("b")
        t.wait_for("Roll back to...", "> base")
        t.press("enter")
        t.wait_for("The stack becomes: base", "including second (roll forward")
        t.type("ROLLBACK")
        t.press("enter")
        t.wait_for("Rolled back", "The stack is now: base")
        t.press("enter")
        screen = t.wait_for("not in the stack: second")
        # the saved settings equal the image's (the install's capture): nothing written
        assert "0 changed files," in screen
        # second is the boot's fallback (roottab.prev) now, base is in the stack: the menu
        # says up front that nothing can be deleted, instead of a doomed confirmation
        t.press("d")
        t.wait_for("No restore point can be deleted now", "roottab.prev")
        t.press("enter")
        t.press("f")
        t.wait_for("Create Full Restore Point", "Description:")
        t.type("all in one")
        t.press("tab")
        t.type("full-one")
        t.press("enter")
        t.wait_for("Restore point created", "It is now the whole stack", timeout=60)
        t.press("enter")
        t.wait_for("1  full-one")
        t.press("v")
        screen = t.wait_for("All images are intact")
        for name in ("base", "second", "full-one"):
            assert f"ok      {name}" in screen
        t.press("enter")
        t.press("c")
        assert t.wait_exit() == 0
    assert store.roottab() == ["full-one"]
    assert {m.name for m in store.images()} == {"base", "second", "full-one"}


@pytest.mark.root
def test_undo_puts_back_what_restore_set_aside(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/new-file", "new\n")
    change(store, "var/lib/state", "2\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("2 changed files", "u Undo: nothing to undo")
        t.press("u")
        t.wait_for("Nothing to undo: no writable layer was set aside")
        t.press("enter")
        t.press("r")
        t.wait_for("Type RESTORE")
        t.type("RESTORE")
        t.press("enter")
        t.wait_for("System restored", "Undo puts it back")
        t.press("enter")
        t.wait_for("u Undo Restore / Roll back", "0 changed files")
        t.press("u")
        screen = t.wait_for("Type UNDO and press Enter")
        entry = store.undo_plan()[0]  # type: ignore[index]
        assert f"Put back: the layer set aside in trash/{entry}:" in screen
        assert "2 new or changed files, 0 deleted paths" in screen
        assert "The stack stays: base" in screen and "Set aside in turn" in screen
        t.type("UNDO")
        t.press("enter")
        screen = t.wait_for("Undone", "The stack is unchanged: base")
        assert f"from trash/{entry}" in " ".join(screen.split())
        t.press("enter")
        t.wait_for("2 changed files", "u Undo Restore / Roll back")
        t.press("c")
        assert t.wait_exit() == 0
    assert (store.store.upper / "srv/new-file").read_text() == "new\n"
    assert store.undo_plan() is not None  # the fresh layer it replaced: undo swaps back


def count_boot(eng: Engine) -> None:
    """What the initramfs does before it assembles a stack on trial (ibi-check.sh)."""
    with open(eng.store.boots_path, "a") as f:
        f.write("boot 1764700000\n")


@pytest.mark.root
def test_a_trial_and_the_automatic_fallback_are_shown_and_undone(store: Engine,
                                                                 tmp_path: Path) -> None:
    change(store, "srv/second", "2\n")
    store.create(Kind.INCREMENTAL, name="second", description="second point")
    store.boot_ok()  # [base second] booted: it is the good stack
    change(store, "srv/work", "on second\n")
    store.rollback("base", reason="switch")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        screen = t.wait_for("On trial", "> c Continue booting")
        assert " i On trial (switch): 0 of 3 boots used; falls back to [base second]" in screen
        t.press("c")
        assert t.wait_exit() == 0
    for _ in range(3):
        count_boot(store)
    fb = store.boot_fallback()
    assert fb is not None and store.roottab() == ["base", "second"]
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        screen = t.wait_for("Automatic fallback", "> c Continue booting")
        assert "1 changed file" in screen  # the good stack's own layer is back
        screen = " ".join(screen.split())  # a long line wraps, whole
        assert (f"! Automatic fallback {fb.at:%Y-%m-%d %H:%M}: [base] failed 3 boots; back "
                "on [base second]" in screen)
        assert "On trial" not in screen
        t.press("u")
        screen = t.wait_for("Type UNDO and press Enter")
        assert "The stack becomes: base" in screen and "(now: base -> second)" in screen
        assert "the boot falls back to [base second]." in " ".join(screen.split())
        t.type("UNDO")
        t.press("enter")
        screen = " ".join(t.wait_for("Undone", "The stack is now: base").split())
        assert ("It is on trial: a boot of it must complete within 3 boots, else the boot "
                "falls back to [base second]." in screen)
        t.press("enter")
        screen = t.wait_for("On trial (undo): 0 of 3 boots used")
        assert "Automatic fallback" not in screen
        t.press("c")
        assert t.wait_exit() == 0
    assert store.roottab() == ["base"]


@pytest.mark.root
def test_undo_on_a_live_layer_is_queued(store: Engine, root_ns: Path, tmp_path: Path) -> None:
    change(store, "srv/old-file", "old\n")
    store.restore()
    target = root_ns / "root"
    target.mkdir()
    store.mount(target)
    try:
        (target / "srv" / "live-file").write_text("live\n")
        with Tui(menu_args(store.data_dir, tmp_path)) as t:
            t.wait_for("1 changed file", "u Undo Restore / Roll back")
            t.press("u")
            t.wait_for("Type UNDO")
            t.type("UNDO")
            t.press("enter")
            t.wait_for("in use by the overlay", "[ Queue for the next boot ]")
            t.press("right", "enter")
            t.wait_for("Queued for the next boot", "puts the set-aside writable layer back")
            t.press("enter")
            t.wait_for("queued for the next boot: undo")
            t.press("c")
            assert t.wait_exit() == 0
        assert store.pending() is not None and store.pending()["action"] == "undo"
        assert (target / "srv" / "live-file").exists()  # nothing swapped now
    finally:
        store.umount(target)


@pytest.mark.root
def test_compact_merges_restore_points_in_a_booted_system(store: Engine, root_ns: Path,
                                                          tmp_path: Path) -> None:
    """The depth notice names the key; Compact, started one restore point higher, merges
    the run while the stack is mounted with its writable layer in use (a booted system):
    nothing is queued, the layer stays, the old images stay, the system shows the same."""
    import stat

    for name in ("a", "b", "c"):
        change(store, f"srv/{name}", f"{name}\n")
        if name == "c":  # a deletion: a whiteout over the base's file
            (store.store.upper / "usr/bin").mkdir(parents=True)
            os.mknod(store.store.upper / "usr/bin/tool", stat.S_IFCHR, os.makedev(0, 0))
        store.create(Kind.INCREMENTAL, name=name, description=f"point {name}")
    (store.store.root / "policy").write_text("format: 1\nmax_depth: 3\n")
    target = root_ns / "root"
    target.mkdir()
    store.mount(target)
    try:
        (target / "srv" / "live-file").write_text("live\n")
        with Tui(menu_args(store.data_dir, tmp_path)) as t:
            t.wait_for("The stack is 4 images deep (past the policy's bound): k compacts it",
                       "1 changed file")
            t.press("k")
            t.wait_for("Merges 3 restore points", "depth:     4 images now, 2 after",
                       "[ Start from... ]")
            t.press("tab", "tab", "right", "enter")
            screen = t.wait_for("Choose the lowest restore point to merge")
            assert "> b" in screen and "[merges 2, 3 images after]" in screen
            t.press("enter")
            screen = t.wait_for("merged:    b..c (2 restore points)",
                                "becomes:   base -> a -> (the new image)")
            assert "the writable layer, untouched" in " ".join(screen.split())
            t.type("b and c")
            t.press("tab")
            t.type("bc")
            t.press("enter")
            screen = " ".join(t.wait_for("Restore points compacted", timeout=60).split())
            assert "Merged b..c (2 restore points) into bc" in screen
            assert "The stack is now: base -> a -> bc (3 images deep; it was 4)" in screen
            assert "Queue" not in screen
            t.press("enter")
            screen = t.wait_for("3  bc", "not in the stack: b, c")
            assert "images deep" not in screen and "1 changed file" in screen
            t.press("c")
            assert t.wait_exit() == 0
        assert store.roottab() == ["base", "a", "bc"]
        assert {m.name for m in store.images()} == {"base", "a", "b", "c", "bc"}
        assert [m.description for m in store.images() if m.name == "bc"] == ["b and c"]
        assert (store.store.upper / "srv" / "live-file").read_text() == "live\n"
    finally:
        store.umount(target)
    store.mount(target)  # the merged stack, as the next boot assembles it
    try:
        assert [(target / "srv" / n).read_text() for n in ("a", "b", "c", "live-file")] == \
            ["a\n", "b\n", "c\n", "live\n"]
        assert not (target / "usr/bin/tool").exists()
        assert (target / "etc/hostname").read_text() == "base-host\n"
    finally:
        store.umount(target)
