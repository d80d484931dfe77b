"""End to end: the real ``python -m screens`` in a pseudo-terminal (pexpect), its screen read
through pyte, driven by keys, on a real store built by the engine (root: mksquashfs, and a
private mount namespace entered by conftest). The child menu inherits that namespace."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from maintenance.engine import Engine
from maintenance.model import Kind
from screens import decision
from tests.conftest import require_root
from tests.menu_tui import Tui, missing_tools

pytestmark = pytest.mark.tui


@pytest.fixture(autouse=True)
def _tools() -> None:
    why = missing_tools()
    if why:
        if os.environ.get("IBI_REQUIRE_ALL") == "1":
            pytest.fail(f"required capability missing: {why}")
        pytest.skip(why)


def menu_args(data: Path, tmp: Path) -> list[str]:
    """The menu on ``data``; root's password is read from ``tmp/system/etc/shadow`` (none
    unless a test writes one), not from the host's."""
    (tmp / "system" / "etc").mkdir(parents=True, exist_ok=True)
    return ["--data", str(data), "--run-dir", str(tmp / "run"), "--decision",
            str(tmp / "decision"), "--log", str(tmp / "menu.log"), "--root", str(tmp / "system")]


def tree(root: Path) -> None:
    for d in ("etc/app", "usr/bin", "srv", "home", "var/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("base-host\n")
    (root / "etc/app/main.conf").write_text("level = 1\n")
    (root / "usr/bin/tool").write_text("#!/bin/sh\necho tool\n")
    (root / "var/lib/state").write_text("1\n")


def change(eng: Engine, rel: str, text: str) -> None:
    """Change a file as the running system would: in the writable layer's upper dir."""
    p = eng.store.upper / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree(root_ns / "tree")
    engine.init(source_dir=root_ns / "tree", description="test base")
    return engine


@pytest.mark.root
def test_create_incremental_point_shows_in_stack(store: Engine, tmp_path: Path) -> None:
    change(store, "etc/app/main.conf", "level = 2\n")
    change(store, "srv/new-file", "new\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        screen = t.wait_for("> c Continue booting", "writable layer")
        assert "2 changed files" in screen
        t.press("i")
        t.wait_for("Create Incremental Restore Point", "Description:")
        t.type("from the tui")
        t.press("tab")
        t.type("tui-point")
        t.press("enter")
        t.wait_for("Restore point created", "incremental restore point tui-point")
        t.press("enter")
        screen = t.wait_for("Image stack", "tui-point")
        row = next(r for r in screen.splitlines() if "tui-point" in r)
        assert row.split()[:3] == ["2", "tui-point", "incremental"]
        assert "from the tui" in row
        assert "0 changed files" in screen
        t.press("c")
        assert t.wait_exit() == decision.EXIT_NORMAL
    assert store.roottab() == ["base", "tui-point"]
    assert (tmp_path / "decision").read_text() == "normal\n"


@pytest.mark.root
def test_restore_system_empties_the_writable_layer(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/new-file", "new\n")
    change(store, "var/lib/state", "2\n")
    (store.data_dir / "home" / "user-file").write_text("mine\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("2 changed files")
        t.press("r")
        screen = t.wait_for("Type RESTORE and press Enter")
        assert "/home: every user's files" in screen and "the image stack: base" in screen
        assert "Saved settings" in screen
        for _ in range(5):  # the discarded paths come last, after the saved settings
            if "/srv/new-file" in t.text and "/var/lib/state" in t.text:
                break
            t.press("pgdn")
        t.wait_for("/srv/new-file", "/var/lib/state")
        t.type("RESTORE")
        t.press("enter")
        t.wait_for("System restored", "The writable layer is now fresh")
        t.press("enter")
        t.wait_for("0 changed files, 0 deleted")
        t.press("c")
        assert t.wait_exit() == 0
    assert store.changes() == []
    assert (store.data_dir / "home" / "user-file").read_text() == "mine\n"


@pytest.mark.root
def test_live_review_of_an_older_point(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/second", "2\n")
    store.create(Kind.INCREMENTAL, name="second", description="second point")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("second point")
        t.press("l")
        screen = t.wait_for("Choose the restore point")
        assert screen.index("> second") < screen.index("base")
        t.press("down", "enter")
        screen = t.wait_for("Live Review of base", "stack: base")
        assert "tmpfs" in screen and "Nothing is kept" in screen
        t.press("enter")
        assert t.wait_exit() == decision.EXIT_REVIEW
    assert (tmp_path / "decision").read_text() == "review base\n"
    assert store.roottab() == ["base", "second"]


@pytest.mark.root
def test_cancelled_confirmations_change_nothing(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/x", "x\n")
    store.create(Kind.INCREMENTAL, name="second")
    change(store, "srv/y", "y\n")
    before = (store.roottab(), store.changes())
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("second")
        t.press("r")
        t.wait_for("Type RESTORE")
        t.type("RESTO")
        t.press("esc")
        t.wait_for("> c Continue booting")
        t.press("b")
        t.wait_for("Roll back to...", "> base")
        t.press("enter")
        t.wait_for("The stack becomes: base", "Type ROLLBACK")
        t.type("rollback")
        t.press("enter")
        t.wait_for("Type ROLLBACK exactly")
        t.press("tab", "enter")  # the Cancel button
        t.wait_for("Choose the restore point")
        t.press("esc")
        t.wait_for("> c Continue booting")
        assert not (tmp_path / "decision").exists()
        t.press("c")
        assert t.wait_exit() == 0
    assert (store.roottab(), store.changes()) == before


@pytest.mark.root
def test_broken_chain_is_flagged(store: Engine, tmp_path: Path) -> None:
    (store.store.root / "roottab").write_text("base\nghost\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        screen = t.wait_for("ghost", "> c Continue booting")
        assert "!! ghost: image file is missing" in screen
        row = next(r for r in screen.splitlines() if "! ghost" in r)
        assert "missing" in row
        t.press("c")
        assert t.wait_exit() == 0


def test_ibi_menu_runs_the_menu(tmp_path: Path) -> None:
    """``ibi menu`` is the menu (``ibi-menu``, run in its place): the engine package starts
    it without importing it."""
    data = Path(tempfile.mkdtemp(prefix="ibi-m-"))
    try:
        with Tui(["menu", *menu_args(data, tmp_path)],
                 command=("-m", "maintenance.cli")) as t:
            screen = t.wait_for("The image store cannot be used", "> c Continue booting")
            assert f"no ibi store in {data} (no .root_images/)" in screen
    finally:
        data.rmdir()


def test_missing_store_opens_with_the_problem(tmp_path: Path) -> None:
    data = Path(tempfile.mkdtemp(prefix="ibi-m-"))  # short: the message names it whole
    try:
        # as the initramfs runs it after a failed boot (dracut-module/90ibi/ibi-assemble.sh)
        with Tui(menu_args(data, tmp_path), term="vt220",
                 env={"IBI_BOOT_ERROR": "cannot boot: roottab is missing"}) as t:
            screen = t.wait_for("The image store cannot be used", "> c Continue booting")
            assert "!! The boot failed:" in screen
            assert "cannot boot: roottab is missing" in screen
            assert f"no ibi store in {data} (no .root_images/)" in screen
            assert "(create one with: ibi init)" in " ".join(screen.split())
            check_rescue(t, screen)
    finally:
        data.rmdir()


def check_rescue(t: Tui, screen: str) -> None:
    assert "Shell" in screen and "Roll back to..." in screen and "Restore System" in screen
    assert "Create Full" not in screen
    t.press("r")  # what can still be tried says why it fails, and the menu carries on
    t.wait_for("Error: the action failed")
    t.press("enter")
    t.press("c")
    assert t.wait_exit() == 0


def test_shell_suspends_and_redraws(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path), term="vt100") as t:
        t.wait_for("> c Continue booting")
        t.press("s")
        t.wait_for("ibi maintenance shell")
        t.type("echo $((6*7))-from-shell\r")
        t.wait_for("42-from-shell")
        t.type("exit\r")
        t.wait_for("The image store cannot be used", "> c Continue booting")
        assert "42-from-shell" not in t.text
        t.press("c")
        assert t.wait_exit() == 0


def test_shell_asks_for_roots_password(tmp_path: Path) -> None:
    """Root of the system has a password: the Shell asks for it (masked), refuses a wrong
    one after a delay, opens on the right one, and does not ask again in the session."""
    from maintenance.auth import hash_root_password
    from tests.menu_fakes import shadow_line

    data = tmp_path / "data"
    data.mkdir()
    args = menu_args(data, tmp_path)
    (tmp_path / "system" / "etc" / "shadow").write_text(
        shadow_line(hash_root_password("letmein", "$y$")))
    with Tui(args, term="vt100") as t:
        t.wait_for("> c Continue booting")
        t.press("s")
        screen = t.wait_for("The Shell needs root's password.", "Password:", "Esc: cancel")
        t.type("wrong")
        assert "Password: *****" in t.text and "wrong" not in t.text
        t.press("enter")
        t.wait_for("Wrong password. Try again")
        assert "ibi maintenance shell" not in t.text
        t.type("letmein")
        t.press("enter")
        t.wait_for("ibi maintenance shell")
        t.type("exit\r")
        t.wait_for("> c Continue booting")
        t.press("s")  # authenticated for the rest of the session
        t.wait_for("ibi maintenance shell")
        t.type("exit\r")
        t.wait_for("> c Continue booting")
        t.press("c")
        assert t.wait_exit() == 0
    assert "letmein" not in screen


def test_zero_size_terminal_falls_back_to_80x24(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path), winsize=(0, 0), term="linux") as t:
        t.wait_for("> c Continue booting", "?: help")
        assert "?: help" in t.screen.display[23]
        assert "ibi Maintenance Mode" in t.screen.display[0]
        t.press("c")
        assert t.wait_exit() == 0


def test_ctrl_c_is_harmless_and_help_opens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path), term="vt100", env={"NO_COLOR": "1"}) as t:
        t.wait_for("> c Continue booting")
        t.press("ctrl-c")
        assert t.child.isalive()
        t.press("?")
        t.wait_for("Keys", "Restore System: throw")
        t.press("esc")
        t.wait_for("no disk figures")  # the help is gone: the pane under it shows again
        assert "Keys" not in t.text
        t.press("ctrl-l")
        t.wait_for("> c Continue booting", "no disk figures")
        t.press("down", "down", "down", "up", "up", "up", "enter")
        assert t.wait_exit() == 0


def test_usage_error_without_terminal() -> None:
    import subprocess
    import sys

    from tests.menu_tui import REPO

    out = subprocess.run([sys.executable, "-m", "screens", "--data", "/nonexistent"],
                         cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert out.returncode == decision.EXIT_USAGE
    assert "needs a terminal" in out.stderr


def test_root_is_available_or_reason_is_printed() -> None:
    """Keeps the reason the root tests skip visible in -ra output even when only this file
    runs (require_root skips with it, or fails under IBI_REQUIRE_ALL=1)."""
    require_root()


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


def test_sigterm_ends_without_a_decision(tmp_path: Path) -> None:
    import signal

    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path)) as t:
        t.wait_for("> c Continue booting")
        t.child.kill(signal.SIGTERM)
        assert t.wait_exit() == decision.EXIT_INTERRUPTED
    assert not (tmp_path / "decision").exists()
    assert "ended by signal 15" in (tmp_path / "menu.log").read_text()


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
